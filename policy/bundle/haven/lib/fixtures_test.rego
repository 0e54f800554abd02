# Fixtures shared by the tests of every decision. They stand in for
# data.approvals and for typical inputs so that the tests do not depend on
# the hashes of the reference definitions, which change when a definition
# is edited.
package haven.lib

fixture_now := "2026-03-01T09:00:00Z"

fixture_hash := "1111111111111111111111111111111111111111111111111111111111111111"

fixture_approvals := {"t2dm-emergency-admissions": {
	"hash": fixture_hash,
	"approver": "Haven governance board, meeting 2025-11",
	"approved_on": "2025-11-14",
	"expires": "2026-11-14T00:00:00Z",
	"purposes": ["commissioning", "service_evaluation"],
	"roles": ["analyst", "commissioner"],
	"parameters": {
		"index_date": {"min": "2018-01-01", "max": "2025-12-31"},
		"followup_days": {"min": 30, "max": 730},
		"sex": {"values": ["F", "M"]},
	},
}}

fixture_parameters := {"index_date": "2024-04-01", "followup_days": 365}

# codes is the set of reason codes of a decision, for exact comparisons.
codes(decision) := {r.code | some r in decision.reasons}
