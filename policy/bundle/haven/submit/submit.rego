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
#     ledger       {since, near, runs}: the release ledger's runs of this
#                  definition (any requester) submitted at or after since
#                  that released a table or are still running, as the
#                  engine reads them with data.ledger's numbers: near, the
#                  runs inside near_duplicate.window_days whose parameters
#                  all lie within its distance of these (each {run_id,
#                  requester {id, org}, parameters, submitted_at,
#                  released}); runs {requester, organisation}, how many
#                  inside budget.period_days were the requester's and
#                  their organisation's. Required while data.ledger sets
#                  rules
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
	count(ledger_reasons) == 0
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

# The release ledger. Across runs, disclosure control holds only if a
# requester cannot ask nearly the same question twice and subtract, nor ask
# without limit: data.ledger.near_duplicate refuses a request whose
# parameters all lie within a distance of an earlier run's (released, or
# still running and so perhaps about to be) inside a window, naming that
# run; data.ledger.budget caps the runs of one definition per requester
# and per organisation in a period. Any run counts, whoever asked it:
# released tables are published, so two requesters can subtract as well as
# one. The coordinator reads the ledger and records the run in one store
# transaction, so concurrent submissions cannot both slip under a limit.
reasons contains r if some r in ledger_reasons

day_ns := (24 * 60) * 60e9

ledger_ruled if data.ledger.near_duplicate

ledger_ruled if data.ledger.budget

near_rule := data.ledger.near_duplicate if {
	is_number(data.ledger.near_duplicate.window_days)
	is_number(data.ledger.near_duplicate.date_days)
	is_number(object.get(data.ledger.near_duplicate, "number_distance", 0))
}

budget_rule := data.ledger.budget if {
	is_number(data.ledger.budget.period_days)
	is_number(data.ledger.budget.per_requester)
	is_number(data.ledger.budget.per_organisation)
}

ledger_reasons contains lib.reason("ledger_rules_invalid", "data.ledger.near_duplicate needs numbers window_days, date_days and (optionally) number_distance") if {
	data.ledger.near_duplicate
	not near_rule
}

ledger_reasons contains lib.reason("ledger_rules_invalid", "data.ledger.budget needs numbers period_days, per_requester and per_organisation") if {
	data.ledger.budget
	not budget_rule
}

ledger_reasons contains lib.reason("ledger_unknown", "the release ledger (ledger.since, well-formed ledger.near and ledger.runs counts) is required while the bundle sets near-duplicate or budget rules") if {
	ledger_ruled
	not ledger_given
}

ledger_given if {
	lib.valid_time(input.ledger.since)
	is_array(input.ledger.near)
	every e in input.ledger.near {
		entry_valid(e)
	}
	is_number(input.ledger.runs.requester)
	is_number(input.ledger.runs.organisation)
}

entry_valid(e) if {
	is_string(e.run_id)
	lib.valid_time(e.submitted_at)
	is_string(e.requester.id)
	is_string(e.requester.org)
	is_object(e.parameters)
	is_boolean(e.released)
}

now_ns := time.parse_rfc3339_ns(input.now)

# lookback_days is how far back the rules look; a ledger that starts later
# could hide a run they must see.
lookback_days := max({object.get(data.ledger, ["near_duplicate", "window_days"], 0), object.get(data.ledger, ["budget", "period_days"], 0)})

ledger_reasons contains lib.reason("ledger_incomplete", sprintf("the release ledger given starts at %s, later than the %v days the bundle's rules look back", [input.ledger.since, lookback_days])) if {
	ledger_ruled
	ledger_given
	now_valid
	time.parse_rfc3339_ns(input.ledger.since) > now_ns - (lookback_days * day_ns)
}

# The engine has already chosen the near runs with the rule's numbers
# (window_days, date_days, number_distance): two parameter sets are near
# when they name the same parameters and each pair of values is equal, or
# dates within date_days days, or numbers within number_distance.
ledger_reasons contains lib.reason("near_duplicate", msg) if {
	ledger_given
	now_valid
	near_rule
	some e in input.ledger.near
	msg := sprintf("run %s (%s, submitted %s) asked definition %q with parameters within the near-duplicate distance of these (dates within %v days, numbers within %v); the board refuses a near-duplicate for %v days after it", [
		e.run_id, released_word(e), substring(e.submitted_at, 0, 10), definition_id,
		near_rule.date_days, object.get(near_rule, "number_distance", 0), near_rule.window_days,
	])
}

released_word(e) := "released" if e.released

else := "still running"

ledger_reasons contains lib.reason("budget_exceeded", sprintf("the requester has had %d runs of definition %q in the last %v days, its budget per requester (%v)", [n, definition_id, budget_rule.period_days, budget_rule.per_requester])) if {
	ledger_given
	n := input.ledger.runs.requester
	n >= budget_rule.per_requester
}

ledger_reasons contains lib.reason("budget_exceeded", sprintf("the requester's organisation has had %d runs of definition %q in the last %v days, its budget per organisation (%v)", [n, definition_id, budget_rule.period_days, budget_rule.per_organisation])) if {
	ledger_given
	n := input.ledger.runs.organisation
	n >= budget_rule.per_organisation
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
