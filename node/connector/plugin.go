package connector

import (
	"context"
	"errors"
	"log/slog"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

// ProtocolVersion is the version of the plugin protocol this package
// speaks. A change that old plugins or hosts cannot follow adds a version
// to versionedPlugins instead of changing this one's meaning.
const ProtocolVersion = 1

// pluginName is the one plugin a connector binary serves.
const pluginName = "connector"

// The magic cookie tells a connector binary it was started by a Haven node.
// It is a guard against running a plugin by hand, not a secret, and it
// never changes.
const (
	magicCookieKey   = "HAVEN_CONNECTOR_PLUGIN"
	magicCookieValue = "4f1c9a7e2b6d8053c1e7a9f2d4b6e8a0"
)

// HandshakeConfig returns the go-plugin handshake that node and connector
// plugins share. ProtocolVersion is left out: the versions are negotiated
// through versionedPlugins.
func HandshakeConfig() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		MagicCookieKey:   magicCookieKey,
		MagicCookieValue: magicCookieValue,
	}
}

// versionedPlugins returns the plugin sets by protocol version, for
// go-plugin's VersionedPlugins. The host passes a nil backend; a plugin
// passes the backend it serves and the logger its server logs to.
func versionedPlugins(b Backend, logger *slog.Logger) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {pluginName: &GRPCPlugin{backend: b, logger: logger}},
	}
}

// GRPCPlugin is the go-plugin glue for a connector: it registers the gRPC
// server over a Backend in the plugin and builds the client in the host.
// Only gRPC is spoken; net/rpc is switched off.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Plugin side only.
	backend Backend
	logger  *slog.Logger
}

// Interface drift becomes a build error.
var (
	_ plugin.Plugin               = (*GRPCPlugin)(nil)
	_ plugin.GRPCPlugin           = (*GRPCPlugin)(nil)
	_ connectorv1.ConnectorServer = (*server)(nil)
	_ Connector                   = (*Host)(nil)
	_ Connector                   = (*grpcClient)(nil)
)

// GRPCServer registers the connector service. It runs in the plugin.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.backend == nil {
		return errors.New("connector plugin: no backend to serve")
	}
	connectorv1.RegisterConnectorServer(s, newServer(p.backend, p.logger))
	return nil
}

// GRPCClient returns the client the host calls. go-plugin cancels ctx when
// the plugin process exits, which is how a failed call learns that the
// plugin crashed rather than erred.
func (p *GRPCPlugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return &grpcClient{rpc: connectorv1.NewConnectorClient(cc), exited: ctx.Done()}, nil
}
