// Package connectorv1 is the gRPC protocol between a Haven node and its
// connector plugin, generated from connector.proto beside this file by
// scripts/gen-proto.sh (make proto). Only node/connector uses it: the node
// and the plugin binaries go through that package's Host and Serve, never
// through these types directly.
package connectorv1
