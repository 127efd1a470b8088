"""Side-by-side benchmark: secreg against the Go reference registry (CNCF distribution), on this machine.

`python -m bench` (or `make bench`) starts both registries over TLS with one certificate, runs every workload
against both, interleaved (secreg, Go, Go, secreg, ... so neither always goes first), prints a markdown table
and writes `bench/results/latest.json`. Ratios are secreg/Go, computed per pair of back-to-back runs and then
summarised by their median, so a slow moment of the machine hits both sides of a pair.

Modules: `cli` (flags, phases), `servers` (starting both registries, peak RSS from /proc), `client`
(a blocking HTTP/1.1 client with big buffers, and the external tools: curl, wrk), `workloads`
(what each workload does), `results` (statistics, the table, the JSON file).
"""
