// Package access holds the rules of who may see and act on a run. They are
// the coordinator's whole access policy for commissioners, kept apart from
// the run lifecycle so that every face of the coordinator (the gRPC API,
// Flight, the portal, and the JSON API to come) asks the same questions.
//
// Identity is a principal: an (organisation, user) pair. The same user id
// in another organisation is another person, and is refused.
package access

import (
	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// IsRequester reports whether p is the principal that submitted run.
func IsRequester(p authn.Principal, run *havenv1.Run) bool {
	return p.Kind == authn.KindUser && p.Org != "" && p.ID != "" &&
		run.GetRequester().GetId() == p.ID && run.GetRequester().GetOrg() == p.Org
}

// MayRead reports whether p may see run (its state, sites and coverage):
// anyone in the requester's organisation, the requester included, or an
// operator.
func MayRead(p authn.Principal, run *havenv1.Run) bool {
	return p.Kind == authn.KindUser && (p.Operator || (p.Org != "" && run.GetRequester().GetOrg() == p.Org))
}

// MayAct reports whether p may cancel run or fetch its released table: its
// requester, or an operator.
func MayAct(p authn.Principal, run *havenv1.Run) bool {
	return p.Kind == authn.KindUser && (p.Operator || IsRequester(p, run))
}
