# METADATA
# title: haven/submit
# description: |
#   Evaluated by the coordinator before it plans a run. Input:
#
#     now          RFC 3339 time of the request (passed by the caller so that
#                  the decision is deterministic)
#     requester    {id, org, roles}
#     definition   {id, hash, codelists (optional)}
#     parameters   {name: value}
#     purpose      one of data.purposes
#     counts       {runs_last_24h}: runs this requester started in the last
#                  24 hours; required while data.rate_limits sets a limit
#
#   decision is {allow, reasons}; allow holds exactly when reasons is empty.
package haven.submit

import data.haven.lib

# Most requests are allowed, so `allowed` checks the usual case in one
# pass; only a request it does not clear has every rule below worked out.
# `allowed` implies that `reasons` is empty (the tests check this on every
# input they use), so the decision allows exactly when there is no reason.
decision := {"allow": true, "reasons": []} if {
	allowed
} else := {"allow": count(reasons) == 0, "reasons": sort(reasons)}

allowed if {
	requester_named
	approval := data.approvals[input.definition.id]
	is_string(approval.hash)
	approval.hash != ""
	approval.hash == input.definition.hash
	lib.unexpired(approval, input.now)
	input.purpose in approval.purposes
	params := object.get(input, "parameters", {})
	is_object(params)
	every name, value in params {
		lib.within_bounds(value, approval.parameters[name])
	}
	codelists := object.get(input, ["definition", "codelists"], [])
	is_array(codelists)
	every name in codelists {
		not data.restricted_codelists[name]
	}
	within_rate
	some role in input.requester.roles
	role in approval.roles
}

within_rate if not data.rate_limits.runs_per_requester_per_24h

within_rate if {
	counted
	input.counts.runs_last_24h < data.rate_limits.runs_per_requester_per_24h
}

definition_id := object.get(input, ["definition", "id"], "")

definition_hash := object.get(input, ["definition", "hash"], "")

approval := data.approvals[definition_id]

# A note on style: `not` is applied only to rules without arguments or to
# calls whose arguments are always defined. `not f(input.x)` with input.x
# missing does not hold, which would let a missing field slip through.
reasons contains lib.reason("invalid_input", "now must be an RFC 3339 time") if {
	not now_valid
}

now_valid if lib.valid_time(input.now)

reasons contains lib.reason("invalid_input", "requester must have a non-empty id and org") if {
	not requester_named
}

requester_named if {
	is_string(input.requester.id)
	input.requester.id != ""
	is_string(input.requester.org)
	input.requester.org != ""
}

reasons contains lib.reason("definition_not_approved", sprintf("definition %q has no approval in the governance bundle", [definition_id])) if {
	not approval
}

reasons contains lib.reason("definition_hash_mismatch", sprintf("definition %q differs from the approved version; it needs re-approval", [definition_id])) if {
	approval
	not hash_matches
}

hash_matches if {
	is_string(approval.hash)
	approval.hash != ""
	approval.hash == definition_hash
}

reasons contains lib.reason("approval_expired", sprintf("the approval of definition %q expired at %s", [definition_id, approval.expires])) if {
	now_valid
	approval
	not approval_current
}

approval_current if lib.unexpired(approval, input.now)

reasons contains lib.reason("role_not_permitted", sprintf("none of the requester's roles may run definition %q", [definition_id])) if {
	approval
	not role_permitted
}

role_permitted if {
	some role in input.requester.roles
	role in approval.roles
}

reasons contains lib.reason("purpose_not_permitted", sprintf("definition %q is not approved for this purpose", [definition_id])) if {
	approval
	not purpose_permitted
}

purpose_permitted if input.purpose in approval.purposes

reasons contains r if {
	approval
	some r in lib.parameter_reasons(object.get(input, "parameters", {}), object.get(approval, "parameters", {}))
}

reasons contains r if {
	some r in lib.codelists_reasons(object.get(input, ["definition", "codelists"], []))
}

reasons contains lib.reason("rate_limit_unknown", "counts.runs_last_24h is required while a rate limit is set") if {
	data.rate_limits.runs_per_requester_per_24h
	not counted
}

counted if is_number(input.counts.runs_last_24h)

reasons contains lib.reason("rate_limit_exceeded", sprintf("the requester has reached the limit of %d runs in 24 hours", [limit])) if {
	limit := data.rate_limits.runs_per_requester_per_24h
	counted
	input.counts.runs_last_24h >= limit
}
