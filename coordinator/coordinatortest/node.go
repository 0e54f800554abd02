package coordinatortest

import (
	"google.golang.org/grpc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/sitesim"
	"github.com/havenhealth/haven/policy/catalog"
)

// NodeDouble is a test double of a node: a simulated site (sitesim.Site)
// that registers over NodeLink with its own certificate and answers each
// task with the records its Answer returns.
type NodeDouble = sitesim.Site

// RejectedError is returned by Connect when the coordinator refuses the
// Register.
type RejectedError = sitesim.RejectedError

// Sent is what an uploader sent.
type Sent = sitesim.Sent

// Node returns a node double for site ods, which links with the network's
// node certificate for ods when Connect is called.
func (n *Network) Node(ods string, kind cdm.SiteKind, population int64) *NodeDouble {
	return sitesim.New(ods, kind, population, n.Catalog, func() (*grpc.ClientConn, error) {
		cert, key := n.NodeCert(ods)
		return n.Dial(cert, key), nil
	})
}

// RemoteNode returns a node double for site ods that links to a
// coordinator running elsewhere (another process) over conn, which must
// present the site's node certificate. cat is the catalogue of the bundle
// the coordinator loaded.
func RemoteNode(conn *grpc.ClientConn, cat *catalog.Catalog, ods string, kind cdm.SiteKind, population int64) *NodeDouble {
	return sitesim.Remote(conn, cat, ods, kind, population)
}
