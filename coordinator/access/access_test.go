package access

import (
	"testing"

	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func TestRules(t *testing.T) {
	run := &havenv1.Run{Id: "run-1", Requester: &havenv1.Requester{Id: "demo-commissioner", Org: "QHM"}}
	user := func(id, org string) authn.Principal {
		return authn.Principal{Kind: authn.KindUser, ID: id, Org: org, Roles: []string{"analyst"}}
	}
	operator := user("ops", "NHSE")
	operator.Operator = true
	for _, tc := range []struct {
		name                 string
		p                    authn.Principal
		requester, read, act bool
	}{
		{"the requester", user("demo-commissioner", "QHM"), true, true, true},
		{"a colleague", user("analyst-2", "QHM"), false, true, false},
		{"the same user id in another organisation", user("demo-commissioner", "OTHERORG"), false, false, false},
		{"another organisation", user("analyst-9", "QWE"), false, false, false},
		{"an operator", operator, false, true, true},
		{"a user without an organisation", user("demo-commissioner", ""), false, false, false},
		{"a node", authn.Principal{Kind: authn.KindNode, ODS: "G80001", ID: "demo-commissioner", Org: "QHM"}, false, false, false},
		{"no one", authn.Principal{}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsRequester(tc.p, run); got != tc.requester {
				t.Errorf("IsRequester = %v, want %v", got, tc.requester)
			}
			if got := MayRead(tc.p, run); got != tc.read {
				t.Errorf("MayRead = %v, want %v", got, tc.read)
			}
			if got := MayAct(tc.p, run); got != tc.act {
				t.Errorf("MayAct = %v, want %v", got, tc.act)
			}
		})
	}
	// A run without a requester (a corrupt record) is no one's.
	if MayRead(user("", ""), &havenv1.Run{}) || MayAct(user("", ""), &havenv1.Run{}) || IsRequester(user("", ""), &havenv1.Run{}) {
		t.Error("a run without a requester is readable by a user without identity")
	}
}
