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
# requester ids, and repeat a parameter value only where the board's grid
# or an earlier run must be named for the refusal to be usable (an
# off-grid value beside its nearest allowed values); parameters are the
# approved query's settings, never data about a patient.
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
# A range may carry min and max (numbers, or YYYY-MM-DD dates), values (a
# list of allowed values) and step (a grid: "month_start", "quarter_start"
# or "month_end" for a date, a whole number for an int, counted from min or
# else from 0).
parameter_reasons(params, ranges) := {reason("invalid_input", "parameters must be an object")} if {
	not is_object(params)
} else := union({
	unnamed_parameters(params, ranges),
	below_min(params, ranges),
	above_max(params, ranges),
	mistyped(params, ranges),
	not_listed(params, ranges),
	off_grid(params, ranges),
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
	grid_clears(v, r)
}

within_bounds(v, r) if {
	not r.values
	is_date(v)
	is_date(r.min)
	is_date(r.max)
	r.min <= v
	v <= r.max
	grid_clears(v, r)
}

grid_clears(_, r) if object.get(r, "step", null) == null

grid_clears(v, r) if on_grid(v, r.step, grid_base(r))

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
	r := reason("parameter_not_allowed", sprintf("parameter %q is not one of the approved values%s", [name, nearest_listed(value, allowed)]))
}

# nearest_listed names, for a number, the approved values on either side
# of it, so that a refused request says what to ask instead.
nearest_listed(v, allowed) := sprintf("; nearest allowed: %s", [concat(", ", [sprintf("%v", [x]) | some x in sort(near)])]) if {
	is_number(v)
	is_array(allowed)
	below := {x | some x in allowed; is_number(x); x < v}
	above := {x | some x in allowed; is_number(x); x > v}
	near := {x | some x in below; x == max(below)} | {x | some x in above; x == min(above)}
	count(near) > 0
} else := ""

# off_grid refuses a value off its approved grid, naming the allowed values
# on either side of it (within the range). A step the policy does not know,
# or a value of another type than its step, is off the grid: it fails
# closed.
off_grid(params, ranges) := {r |
	some name, value in params
	step := ranges[name].step
	step != null
	not on_grid(value, step, grid_base(ranges[name]))
	r := reason("parameter_off_grid", sprintf("%s %v is not %s; nearest allowed: %s", [
		name, value, grid_phrase(step, grid_base(ranges[name])),
		concat(", ", grid_neighbours(value, ranges[name])),
	]))
}

# grid_base is where an integer step counts from: the range's minimum, or 0.
grid_base(r) := r.min if is_number(r.min)

else := 0

on_grid(v, "month_start", _) if {
	is_date(v)
	endswith(v, "-01")
}

on_grid(v, "quarter_start", _) if {
	is_date(v)
	regex.match(`^\d{4}-(01|04|07|10)-01$`, v)
}

on_grid(v, "month_end", _) if {
	is_date(v)
	time.date(time.add_date(day_ns(v), 0, 0, 1))[2] == 1
}

on_grid(v, step, base) if {
	is_number(v)
	is_number(step)
	step > 0
	(v - base) % step == 0
}

date_grids := {
	"month_start": "a month start",
	"quarter_start": "a quarter start (1 January, April, July or October)",
	"month_end": "a month end",
}

grid_phrase(step, _) := date_grids[step]

grid_phrase(step, base) := sprintf("on the approved grid (every %v from %v)", [step, base]) if is_number(step)

grid_phrase(step, _) := "on the approved grid (a grid this policy does not know)" if {
	not is_number(step)
	not date_grids[step]
}

# grid_neighbours are the grid points on either side of v that lie within
# the range, formatted as the request would write them.
grid_neighbours(v, r) := [sprintf("%v", [x]) | some x in sort(grid_points(v, r.step, grid_base(r))); within_range(x, r)]

grid_points(v, "month_start", _) := {format_day(first), format_day(time.add_date(first, 0, 1, 0))} if {
	[y, m, _] := time.date(day_ns(v))
	first := day_ns(sprintf("%04d-%02d-01", [y, m]))
}

grid_points(v, "quarter_start", _) := {format_day(first), format_day(time.add_date(first, 0, 3, 0))} if {
	[y, m, _] := time.date(day_ns(v))
	first := day_ns(sprintf("%04d-%02d-01", [y, ((m - 1) - ((m - 1) % 3)) + 1]))
}

grid_points(v, "month_end", _) := {format_day(time.add_date(first, 0, 0, -1)), format_day(time.add_date(first, 0, 1, -1))} if {
	[y, m, _] := time.date(day_ns(v))
	first := day_ns(sprintf("%04d-%02d-01", [y, m]))
}

grid_points(v, step, base) := {below, below + step} if {
	is_number(v)
	is_number(step)
	step > 0
	below := v - ((v - base) % step)
}

within_range(x, r) if {
	not below_bound(x, r)
	not above_bound(x, r)
}

below_bound(x, r) if {
	comparable(x, r.min)
	x < r.min
}

above_bound(x, r) if {
	comparable(x, r.max)
	x > r.max
}

day_ns(d) := time.parse_ns("2006-01-02", d)

format_day(ns) := sprintf("%04d-%02d-%02d", time.date(ns))

comparable(v, bound) if {
	is_number(v)
	is_number(bound)
}

comparable(v, bound) if {
	is_date(v)
	is_date(bound)
}
