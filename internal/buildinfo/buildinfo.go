// Package buildinfo reports which build of Haven is running, so that nodes
// can tell the coordinator their version and operators can tell builds apart.
package buildinfo

import (
	"runtime/debug"
)

// Version is set at link time with
// -ldflags "-X github.com/havenhealth/haven/internal/buildinfo.Version=v1.2.3";
// otherwise it is taken from the module's build information.
var Version = ""

// Info describes the running build.
type Info struct {
	Version   string // release version, or "devel"
	Revision  string // VCS revision, if known
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string
}

// Read returns the running build's information.
func Read() Info {
	info := Info{Version: Version}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		info.GoVersion = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	return info
}
