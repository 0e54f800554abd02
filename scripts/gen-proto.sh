#!/usr/bin/env bash
# Regenerates the Go code of proto/haven/v1 (the wire contract) and
# proto/haven/connector/v1 (the connector plugin protocol) from their .proto
# sources (`make proto`). The plugins are built from the versions pinned by go.mod's tool
# lines and protoc comes from Debian, so the output is byte-identical to the
# committed files wherever the same protoc release is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The protoc release the committed files were generated with (Debian 12's).
# Another release still works, but changes the version line in every header.
want_protoc="3.21.12"
proto_root=proto
# Each package is generated on its own, so one never imports the other's files.
out_dirs=(proto/haven/v1 proto/haven/connector/v1)

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# protoc itself, and the well-known types (timestamp.proto, duration.proto),
# which Debian ships in libprotobuf-dev.
wkt_include=/usr/include
if ! command -v protoc >/dev/null || [[ ! -f $wkt_include/google/protobuf/timestamp.proto ]]; then
  echo "gen-proto: installing protoc (protobuf-compiler, libprotobuf-dev) with apt-get" >&2
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi
have_protoc=$(protoc --version | awk '{print $2}')
if [[ $have_protoc != "$want_protoc" ]]; then
  echo "gen-proto: warning: protoc $have_protoc, the committed files were made with $want_protoc;" \
    "expect a diff in the generated headers" >&2
fi

# The plugins, at the versions go.mod pins.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$tmp/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

# Remove the old output first so a deleted .proto leaves no orphan behind.
for out_dir in "${out_dirs[@]}"; do
  rm -f "$out_dir"/*.pb.go
  protoc \
    -I "$proto_root" -I "$wkt_include" \
    --plugin=protoc-gen-go="$tmp/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$tmp/protoc-gen-go-grpc" \
    --go_out="$proto_root" --go_opt=paths=source_relative \
    --go-grpc_out="$proto_root" --go-grpc_opt=paths=source_relative \
    "$out_dir"/*.proto
  echo "gen-proto: wrote $(ls "$out_dir"/*.pb.go | wc -l) files in $out_dir" >&2
done
