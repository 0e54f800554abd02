package haven.lib

test_valid_time_accepts_rfc3339 if {
	valid_time("2026-03-01T09:00:00Z")
	valid_time("2026-03-01T09:00:00.123+01:00")
}

test_valid_time_refuses_other_forms if {
	not valid_time("2026-03-01")
	not valid_time("yesterday")
	not valid_time(1740819600)
	not valid_time(null)
	not valid_time("2026-13-45T09:00:00Z")
}

test_unexpired_is_strict if {
	unexpired({"expires": "2026-03-01T09:00:01Z"}, fixture_now)
	not unexpired({"expires": fixture_now}, fixture_now)
	not unexpired({"expires": "2026-02-01T00:00:00Z"}, fixture_now)
	not unexpired({"expires": "next year"}, fixture_now)
	not unexpired({}, fixture_now)
	not unexpired({"expires": "2027-01-01T00:00:00Z"}, "now")
}

test_parameters_within_ranges if {
	ranges := fixture_approvals["t2dm-emergency-admissions"].parameters
	count(parameter_reasons({"index_date": "2018-01-01", "followup_days": 730, "sex": "F"}, ranges)) == 0
	count(parameter_reasons({}, ranges)) == 0
}

test_parameters_out_of_range if {
	ranges := fixture_approvals["t2dm-emergency-admissions"].parameters
	got := {r.code | some r in parameter_reasons(
		{"index_date": "2017-12-31", "followup_days": 731, "sex": "I", "region": "north"},
		ranges,
	)}
	got == {"parameter_below_min", "parameter_above_max", "parameter_not_allowed", "parameter_not_approved"}
}

test_parameter_of_wrong_type if {
	ranges := fixture_approvals["t2dm-emergency-admissions"].parameters
	got := {r.code | some r in parameter_reasons({"followup_days": "365", "index_date": 20240401}, ranges)}
	got == {"parameter_invalid"}
}

test_parameters_not_an_object if {
	{r.code | some r in parameter_reasons(["followup_days"], {})} == {"invalid_input"}
}

test_restricted_codelists if {
	{r.code | some r in codelists_reasons(["t2dm", "ivf"])} == {"restricted_codelist"}
	count(codelists_reasons(["t2dm", "hypertension"])) == 0
	{r.code | some r in codelists_reasons("ivf")} == {"invalid_input"}
}

# Each case is [value, range, whether within_bounds clears it]. Whatever
# within_bounds clears, parameter_reasons must not refuse.
within_bounds_cases := [
	[365, {"min": 30, "max": 730}, true],
	[30, {"min": 30, "max": 730}, true],
	["2024-04-01", {"min": "2018-01-01", "max": "2025-12-31"}, true],
	[29, {"min": 30, "max": 730}, false],
	["2026-01-01", {"min": "2018-01-01", "max": "2025-12-31"}, false],
	[3, {"min": 1, "max": 10, "values": [2, 4]}, false],
	["2020-01-01", {"min": "2018-01-01", "max": "2025-12-31", "values": ["2019-01-01"]}, false],
	[5, {"min": true, "max": 10}, false],
	[5, {"min": 1, "max": "2025-12-31"}, false],
	["2024-01-01", {"min": 1, "max": "2025-12-31"}, false],
	["2024-01-01", {"min": "2018-01-01", "max": "zzz"}, false],
	["2020-xx", {"min": "2018-01-01", "max": "2025-12-31"}, false],
	[5, {"min": 1}, false],
	[5, {}, false],
]

test_within_bounds_cases if {
	every c in within_bounds_cases {
		cleared(c[0], c[1]) == c[2]
	}
}

test_within_bounds_never_clears_a_refused_parameter if {
	every c in within_bounds_cases {
		sound(c[0], c[1])
	}
}

cleared(v, r) if within_bounds(v, r)

else := false

sound(v, r) if not within_bounds(v, r)

sound(v, r) if count(parameter_reasons({"p": v}, {"p": r})) == 0
