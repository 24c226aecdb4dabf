"""`kitaru ui`: the dashboard (server-rendered pages over `kitaru.client`; see app.py)."""
