"""The web UI under /ui/: `secreg.ui.app.create_ui` builds it; see that module for the route table."""
