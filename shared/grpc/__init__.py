"""The older server's gRPC API (docs/grpc.md), served by the local server and the container on
`server.grpc_port` as a translation layer onto the REST API's request kinds: `protos/` (our own
.proto files, names and numbers of the older server's v0.6.0 release), `build.py` (generates
`gen/`, never committed: `make grpc`), `stubs.py` (imports `gen/` or says how to make it),
`convert.py` (messages to kind data and records to messages), `services.py` (one small method per
RPC), `server.py` (the listener: health checking and reflection on).

Nothing here is imported by `functions/` or `shared.http`: a Cloud Function cannot serve gRPC, and
its cold start does not pay for grpcio."""
