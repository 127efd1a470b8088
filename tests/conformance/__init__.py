"""The OCI distribution-spec conformance suite (opencontainers/distribution-spec `conformance/`), ported.

One module per Go suite file; each test is named after the `Specify`/`It`/`ChildRun` it mirrors and runs in
the suite's order against a real secreg over TLS. `classic.py` builds the data of `setup.go`; `runner.py`
holds the request helpers of `api.go` and `testdata.py` the data generator of `testdata.go` (the newer layout,
`run.go`).
"""
