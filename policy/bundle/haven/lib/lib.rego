# METADATA
# title: Helpers shared by Haven's decisions
# description: |
#   Reason objects, time checks, approval checks and parameter-range checks
#   used by haven.submit, haven.participate and haven.disclose.
#
#   Every check here is written as "the good case holds", so that a missing or
#   malformed input makes the good case undefined and the caller's
#   `not ...` adds a deny reason: policy fails closed.
package haven.lib

# reason builds the object every decision returns in its reasons list: a
# stable code for programs and a message for people. Messages never repeat
# input values (parameters, requester ids) so that decision logs stay clean.
reason(code, message) := {"code": code, "message": message}

date_pattern := `^\d{4}-\d{2}-\d{2}$`

# valid_time holds when t is an RFC 3339 timestamp. (Where built-in errors
# are strict, as in Haven's engine, a malformed time is an evaluation error
# instead, which denies just the same.)
valid_time(t) if {
	is_string(t)
	time.parse_rfc3339_ns(t)
}

# is_date holds when v is a calendar date written YYYY-MM-DD, the form the
# catalogue uses for date parameters. Such strings order like the dates.
is_date(v) if {
	is_string(v)
	regex.match(date_pattern, v)
}

# unexpired holds when the approval's expiry lies strictly after now;
# both are RFC 3339 times.
unexpired(approval, now) if {
	is_string(now)
	is_string(approval.expires)
	time.parse_rfc3339_ns(now) < time.parse_rfc3339_ns(approval.expires)
}

# restricted_reasons are the reasons to refuse a task or submission that
# uses legally restricted codelists; names is the list of codelist names.
restricted_reasons(names) := {r |
	some name in names
	entry := data.restricted_codelists[name]
	r := reason(
		"restricted_codelist",
		sprintf("codelist %q is legally restricted (%s) and may not be queried", [name, entry.basis]),
	)
}

# codelists_reasons checks the shape of a codelist list before its contents.
codelists_reasons(names) := {reason("invalid_input", "codelists must be a list of names")} if {
	not is_array(names)
} else := restricted_reasons(names)

# parameter_reasons checks each parameter against the approval's ranges.
# An approval lists every parameter the board looked at; a parameter it does
# not list is refused, so a new parameter needs a new approval.
#
# A range may carry min and max (numbers, or YYYY-MM-DD dates) and values
# (a list of allowed values).
parameter_reasons(params, ranges) := {reason("invalid_input", "parameters must be an object")} if {
	not is_object(params)
} else := union({
	unnamed_parameters(params, ranges),
	below_min(params, ranges),
	above_max(params, ranges),
	mistyped(params, ranges),
	not_listed(params, ranges),
})

# within_bounds is the quick test of one parameter for the decisions'
# `allowed` rules: a number or date between a lower and an upper bound of
# its own type. It implies that parameter_reasons gives no reason for the
# parameter; a parameter it does not cover (one bound only, a list of
# values) is left to parameter_reasons. (With two numeric bounds, Rego's
# ordering of types already makes v a number.)
within_bounds(v, r) if {
	not r.values
	is_number(r.min)
	is_number(r.max)
	r.min <= v
	v <= r.max
}

within_bounds(v, r) if {
	not r.values
	is_date(v)
	is_date(r.min)
	is_date(r.max)
	r.min <= v
	v <= r.max
}

unnamed_parameters(params, ranges) := {r |
	some name, _ in params
	not ranges[name]
	r := reason("parameter_not_approved", sprintf("parameter %q is not named in the approval", [name]))
}

below_min(params, ranges) := {r |
	some name, value in params
	bound := ranges[name].min
	bound != null
	comparable(value, bound)
	value < bound
	r := reason("parameter_below_min", sprintf("parameter %q is below the approved minimum %v", [name, bound]))
}

above_max(params, ranges) := {r |
	some name, value in params
	bound := ranges[name].max
	bound != null
	comparable(value, bound)
	value > bound
	r := reason("parameter_above_max", sprintf("parameter %q is above the approved maximum %v", [name, bound]))
}

mistyped(params, ranges) := {r |
	some name, value in params
	some key in ["min", "max"]
	bound := ranges[name][key]
	bound != null
	not comparable(value, bound)
	r := reason("parameter_invalid", sprintf("parameter %q is not of the type of its approved range", [name]))
}

not_listed(params, ranges) := {r |
	some name, value in params
	allowed := ranges[name].values
	not value in allowed
	r := reason("parameter_not_allowed", sprintf("parameter %q is not one of the approved values", [name]))
}

comparable(v, bound) if {
	is_number(v)
	is_number(bound)
}

comparable(v, bound) if {
	is_date(v)
	is_date(bound)
}
