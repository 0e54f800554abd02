package connector

import (
	"log/slog"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// Serve runs b as a connector plugin: it answers the node's go-plugin
// handshake and serves the connector protocol over gRPC until the node
// ends the process. It is the last thing a plugin binary's main calls,
// once it has parsed its settings and opened its store. logger is where
// the plugin logs; nil means NewPluginLogger(os.Stderr).
//
// Run by hand rather than by a node, Serve prints that the binary is a
// plugin and exits.
func Serve(b Backend, logger *slog.Logger) {
	// go-plugin swaps os.Stderr for a pipe once serving; log lines must go
	// to the original, which the node reads and parses.
	stderr := os.Stderr
	if logger == nil {
		logger = NewPluginLogger(stderr)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  HandshakeConfig(),
		VersionedPlugins: versionedPlugins(b, logger),
		GRPCServer:       plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Level:      hclog.Info,
			Output:     stderr,
			JSONFormat: true,
		}),
	})
}
