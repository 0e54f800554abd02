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

grid_ranges := {
	"index_date": {"min": "2018-01-01", "max": "2025-12-31", "step": "month_start"},
	"quarter": {"min": "2018-01-01", "max": "2025-12-31", "step": "quarter_start"},
	"end": {"min": "2018-01-01", "max": "2025-12-31", "step": "month_end"},
	"followup_days": {"min": 30, "max": 730, "step": 30},
	"offset": {"max": 100, "step": 25},
	"min_age": {"min": 0, "max": 120, "values": [0, 16, 18, 40, 65]},
}

test_on_grid_values_pass if {
	count(parameter_reasons(
		{
			"index_date": "2025-06-01", "quarter": "2024-10-01", "end": "2024-02-29",
			"followup_days": 360, "offset": 75, "min_age": 18,
		},
		grid_ranges,
	)) == 0
}

# Each case is [parameter, value, the message haven/submit gives].
off_grid_cases := [
	["index_date", "2025-06-02", "index_date 2025-06-02 is not a month start; nearest allowed: 2025-06-01, 2025-07-01"],
	["index_date", "2025-12-15", "index_date 2025-12-15 is not a month start; nearest allowed: 2025-12-01"],
	["quarter", "2024-05-20", "quarter 2024-05-20 is not a quarter start (1 January, April, July or October); nearest allowed: 2024-04-01, 2024-07-01"],
	["quarter", "2024-12-31", "quarter 2024-12-31 is not a quarter start (1 January, April, July or October); nearest allowed: 2024-10-01, 2025-01-01"],
	["end", "2024-02-28", "end 2024-02-28 is not a month end; nearest allowed: 2024-01-31, 2024-02-29"],
	["end", "2018-01-15", "end 2018-01-15 is not a month end; nearest allowed: 2018-01-31"],
	["followup_days", 365, "followup_days 365 is not on the approved grid (every 30 from 30); nearest allowed: 360, 390"],
	["offset", 40, "offset 40 is not on the approved grid (every 25 from 0); nearest allowed: 25, 50"],
]

test_off_grid_names_nearest_allowed if {
	every c in off_grid_cases {
		rs := parameter_reasons({c[0]: c[1]}, grid_ranges)
		[r.code | some r in rs] == ["parameter_off_grid"]
		[r.message | some r in rs] == [c[2]]
	}
}

test_listed_numbers_name_nearest_allowed if {
	msg := {r.message | some r in parameter_reasons({"min_age": 17}, grid_ranges)}
	msg == {`parameter "min_age" is not one of the approved values; nearest allowed: 16, 18`}
	{r.message | some r in parameter_reasons({"min_age": 70}, grid_ranges)} == {`parameter "min_age" is not one of the approved values; nearest allowed: 65`}
	{r.message | some r in parameter_reasons({"min_age": "x"}, {"min_age": {"values": [0, 16]}})} == {`parameter "min_age" is not one of the approved values`}
}

test_unknown_or_mistyped_grid_fails_closed if {
	{r.code | some r in parameter_reasons({"d": "2024-01-01"}, {"d": {"step": "fortnight"}})} == {"parameter_off_grid"}
	{r.message | some r in parameter_reasons({"d": "2024-01-01"}, {"d": {"step": "fortnight"}})} == {"d 2024-01-01 is not on the approved grid (a grid this policy does not know); nearest allowed: "}
	{r.code | some r in parameter_reasons({"n": 10}, {"n": {"step": "month_start"}})} == {"parameter_off_grid"}
	{r.code | some r in parameter_reasons({"n": 10}, {"n": {"step": 0}})} == {"parameter_off_grid"}
	{r.code | some r in parameter_reasons({"n": "2024-01-01"}, {"n": {"step": 5}})} == {"parameter_off_grid"}
	count(parameter_reasons({"n": 10}, {"n": {"step": null}})) == 0
}

test_within_bounds_respects_grid if {
	within_bounds("2025-06-01", grid_ranges.index_date)
	not within_bounds("2025-06-02", grid_ranges.index_date)
	within_bounds(360, grid_ranges.followup_days)
	not within_bounds(365, grid_ranges.followup_days)
	every v in ["2025-06-02", "2025-06-01"] {
		sound(v, grid_ranges.index_date)
	}
	every v in [365, 360] {
		sound(v, grid_ranges.followup_days)
	}
}
