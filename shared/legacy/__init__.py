"""The older Resonate server's REST API (docs/legacy-api.md), served as a translation layer onto
the one engine: `rest.py` (flask routes → request kinds → the REST wire shapes), `wire.py` (those
shapes), `ids.py` (the task ids its clients echo back), `sse.py` (the SSE listener its SDKs connect
to on a second port)."""
