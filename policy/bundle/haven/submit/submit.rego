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
#     purpose      one of data.purposes, and one that a role of the
#                  requester may state (data.roles[role].purposes)
#     counts       {runs_last_24h, refused_last_24h, active_runs,
#                  org_active_runs}: the requester's submissions in the
#                  last 24 hours that were not refused, and those that
#                  were; the requester's runs in progress, and their
#                  organisation's. Each is required while data.rate_limits
#                  sets its limit. A requester is (org, id).
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
	within_refused_rate
	within_active
	within_org_active
	some role in input.requester.roles
	role in approval.roles
	purpose_known
	role_may_state_purpose
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

# A purpose is one of the bundle's, and each role states only the purposes
# the board lists for it, so a role cannot pick the purpose with the
# weakest thresholds.
reasons contains lib.reason("purpose_unknown", "the purpose is not one of the bundle's purposes") if {
	is_string(input.purpose)
	not purpose_known
}

purpose_known if data.purposes[input.purpose]

reasons contains lib.reason("purpose_not_permitted_for_role", "none of the requester's roles may state this purpose") if {
	is_string(input.purpose)
	purpose_known
	role_permitted
	not role_may_state_purpose
}

role_may_state_purpose if {
	some role in input.requester.roles
	input.purpose in data.roles[role].purposes
}

reasons contains r if {
	approval
	some r in lib.parameter_reasons(object.get(input, "parameters", {}), object.get(approval, "parameters", {}))
}

reasons contains r if {
	some r in lib.codelists_reasons(object.get(input, ["definition", "codelists"], []))
}

# Both limits share one message, so that missing counts give one reason.
rate_limit_unknown := lib.reason("rate_limit_unknown", "counts (runs_last_24h, refused_last_24h, active_runs, org_active_runs) are required while rate limits are set")

reasons contains rate_limit_unknown if {
	data.rate_limits.runs_per_requester_per_24h
	not counted
}

counted if is_number(input.counts.runs_last_24h)

# Refused submissions count too, against their own larger limit: past it
# the coordinator stores nothing more of the requester's for the day.
within_refused_rate if not data.rate_limits.refused_per_requester_per_24h

within_refused_rate if {
	refused_counted
	input.counts.refused_last_24h < data.rate_limits.refused_per_requester_per_24h
}

refused_counted if is_number(input.counts.refused_last_24h)

reasons contains rate_limit_unknown if {
	data.rate_limits.refused_per_requester_per_24h
	not refused_counted
}

reasons contains lib.reason("refused_limit_exceeded", sprintf("the requester has had %d submissions refused in 24 hours, the limit", [limit])) if {
	limit := data.rate_limits.refused_per_requester_per_24h
	refused_counted
	input.counts.refused_last_24h >= limit
}

reasons contains lib.reason("rate_limit_exceeded", sprintf("the requester has reached the limit of %d runs in 24 hours", [limit])) if {
	limit := data.rate_limits.runs_per_requester_per_24h
	counted
	input.counts.runs_last_24h >= limit
}

# Runs in progress are capped per requester and per organisation, so one
# requester's burst cannot crowd the sites and push other organisations'
# runs past their deadlines.
within_active if not data.rate_limits.active_runs_per_requester

within_active if {
	active_counted
	input.counts.active_runs < data.rate_limits.active_runs_per_requester
}

active_counted if is_number(input.counts.active_runs)

within_org_active if not data.rate_limits.active_runs_per_org

within_org_active if {
	org_active_counted
	input.counts.org_active_runs < data.rate_limits.active_runs_per_org
}

org_active_counted if is_number(input.counts.org_active_runs)

reasons contains rate_limit_unknown if {
	data.rate_limits.active_runs_per_requester
	not active_counted
}

reasons contains rate_limit_unknown if {
	data.rate_limits.active_runs_per_org
	not org_active_counted
}

reasons contains lib.reason("too_many_active_runs", sprintf("the requester already has %d runs in progress, the limit; submit again when one finishes", [limit])) if {
	limit := data.rate_limits.active_runs_per_requester
	active_counted
	input.counts.active_runs >= limit
}

reasons contains lib.reason("org_too_many_active_runs", sprintf("the requester's organisation already has %d runs in progress, the limit; submit again when one finishes", [limit])) if {
	limit := data.rate_limits.active_runs_per_org
	org_active_counted
	input.counts.org_active_runs >= limit
}
