# METADATA
# title: haven/participate
# description: |
#   Evaluated by each node before it runs a task. Input:
#
#     now    RFC 3339 time at the node
#     task   the task as the node received it: {definition: {id, hash},
#            purpose, mode ("aggregate" or "linkage"), requester_org,
#            codelists: [names], parameters: {name: value}}
#     site   the node's own facts: {ods, kind ("gp" or "trust"), paused,
#            bundle_revision}
#
#   The node checks again what the coordinator checked at submission (it
#   verifies rather than trusts), then the site's own narrowing: any reason
#   in data.haven.site.deny, a set that a site's own module may fill, also
#   denies. decision is {allow, reasons}; allow holds exactly when reasons is
#   empty. Reasons that came from the site carry "source": "site".
package haven.participate

import data.haven.lib

# Most tasks are allowed, so `allowed` checks the usual case in one pass;
# only a task it does not clear has every rule below worked out. `allowed`
# implies that `reasons` is empty (the tests check this on every input they
# use), so the decision allows exactly when there is no reason.
decision := {"allow": true, "reasons": []} if {
	allowed
} else := {"allow": count(reasons) == 0, "reasons": sort(reasons)}

allowed if {
	approval := data.approvals[input.task.definition.id]
	is_string(approval.hash)
	approval.hash != ""
	approval.hash == input.task.definition.hash
	lib.unexpired(approval, input.now)
	input.task.purpose in approval.purposes
	input.site.paused == false
	input.task.mode in data.site_modes[input.site.kind]
	params := object.get(input.task, "parameters", {})
	is_object(params)
	every name, value in params {
		lib.within_bounds(value, approval.parameters[name])
	}
	is_array(input.task.codelists)
	every name in input.task.codelists {
		not data.restricted_codelists[name]
	}
	site_silent
}

# site_silent holds when the site added no deny rule, or one that denies
# nothing for this task.
site_silent if not site_deny_defined

site_silent if {
	is_set(data.haven.site.deny)
	count(data.haven.site.deny) == 0
}

site_deny_defined if {
	_ := data.haven.site.deny
}

task := object.get(input, "task", {})

site := object.get(input, "site", {})

definition_id := object.get(task, ["definition", "id"], "")

approval := data.approvals[definition_id]

# `not` is applied only to rules without arguments or to calls whose
# arguments are always defined, so that a missing field denies.
reasons contains lib.reason("invalid_input", "now must be an RFC 3339 time") if {
	not now_valid
}

now_valid if lib.valid_time(input.now)

reasons contains lib.reason("definition_not_in_bundle", sprintf("definition %q is not approved in this node's signed bundle", [definition_id])) if {
	not approval
}

reasons contains lib.reason("definition_hash_mismatch", sprintf("definition %q differs from the version approved in this node's bundle", [definition_id])) if {
	approval
	not hash_matches
}

hash_matches if {
	is_string(approval.hash)
	approval.hash != ""
	approval.hash == object.get(task, ["definition", "hash"], "")
}

reasons contains lib.reason("approval_expired", sprintf("the approval of definition %q expired at %s", [definition_id, approval.expires])) if {
	now_valid
	approval
	not approval_current
}

approval_current if lib.unexpired(approval, input.now)

reasons contains lib.reason("purpose_not_permitted", sprintf("definition %q is not approved for this purpose", [definition_id])) if {
	approval
	not purpose_permitted
}

purpose_permitted if task.purpose in approval.purposes

reasons contains r if {
	approval
	some r in lib.parameter_reasons(object.get(task, "parameters", {}), object.get(approval, "parameters", {}))
}

reasons contains r if {
	some r in lib.codelists_reasons(object.get(task, "codelists", []))
}

# A pause state that is missing or anything but false counts as paused.
reasons contains lib.reason("site_paused", "this site is paused by its provider") if {
	not running
}

running if site.paused == false

reasons contains lib.reason("mode_not_allowed", sprintf("a %s site does not take part in %s mode", [site_kind, mode])) if {
	not mode_allowed
}

mode_allowed if mode in data.site_modes[site_kind]

site_kind := object.get(site, "kind", "unknown")

mode := object.get(task, "mode", "unknown")

# Site narrowing. data.haven.site.deny is undefined where the site added no
# module, and then contributes nothing.
reasons contains site_reason(d) if {
	some d in data.haven.site.deny
}

reasons contains lib.reason("site_policy_invalid", "data.haven.site.deny must be a set of reasons") if {
	deny := data.haven.site.deny
	not is_set(deny)
}

# site_reason accepts {code, message} objects or plain strings from a site
# module, so that a site's Rego can stay short.
site_reason(d) := {"code": d.code, "message": d.message, "source": "site"} if {
	is_string(d.code)
	is_string(d.message)
} else := {"code": "site_denied", "message": d, "source": "site"} if {
	is_string(d)
} else := {"code": "site_policy_invalid", "message": "the site policy gave a deny reason that is neither a string nor {code, message}", "source": "site"}
