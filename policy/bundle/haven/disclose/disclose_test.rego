package haven.disclose

import data.haven.lib

base_input := {
	"purpose": "commissioning",
	"table": {"rows": 16, "measures": [
		{"name": "patients", "kind": "count", "dominance": false},
		{"name": "admitted", "kind": "count", "dominance": false},
		{"name": "admissions", "kind": "sum", "dominance": true},
		{"name": "mean_hba1c", "kind": "mean", "dominance": false},
	]},
	"coverage": {
		"sites": {"expected": 10, "answered": 10},
		"population": {"expected": 120000, "answered": 120000},
		"trusts": {"expected": 2, "answered": 2},
		"activity": {"expected": 40000, "answered": 40000},
		"missing_trusts": [],
	},
}

eval(patch) := d if {
	d := decision with input as object.union(base_input, patch)
}

eval_without(paths) := d if {
	d := decision with input as json.remove(base_input, paths)
}

denied_for(d, want) if {
	d.allow == false
	lib.codes(d) == want
}

test_allow_complete_table_with_defaults if {
	d := eval({})
	d.allow
	d.reasons == []
	d.partial == false
	d.thresholds == {"min_cell_count": 8, "rounding_base": 5, "dominance": {"n": 1, "k": 0.8}, "attribute_disclosure": true}
	d.dominance_measures == ["admissions"]
	d.perturbation == {"table": "disclosure/ptable-8-5.csv"}
}

test_perturbation_names_the_table_when_enabled if {
	d := decision with input as base_input
		with data.disclosure.perturbation as {"enabled": true, "table": "disclosure/ptable-8-5.csv"}
	d.allow
	d.perturbation == {"table": "disclosure/ptable-8-5.csv"}
}

test_perturbation_may_be_absent if {
	d := decision with input as base_input
		with data.disclosure as json.remove(data.disclosure, ["perturbation"])
	d.allow
	d.perturbation == null
}

test_attribute_disclosure_defaults_to_on if {
	d := decision with input as base_input
		with data.disclosure as json.remove(data.disclosure, ["attribute_disclosure"])
	d.allow
	d.thresholds.attribute_disclosure == true
}

test_purpose_may_switch_attribute_disclosure if {
	d := decision with input as base_input
		with data.disclosure.purposes as {"commissioning": {"attribute_disclosure": false}}
	d.allow
	d.thresholds.attribute_disclosure == false
}

test_deny_invalid_perturbation_or_attribute_setting if {
	d1 := decision with input as base_input with data.disclosure.attribute_disclosure as "yes"
	denied_for(d1, {"thresholds_invalid"})
	d2 := decision with input as base_input with data.disclosure.perturbation as {"enabled": "true", "table": "t.csv"}
	denied_for(d2, {"thresholds_invalid"})
	d3 := decision with input as base_input with data.disclosure.perturbation as {"enabled": true, "table": ""}
	denied_for(d3, {"thresholds_invalid"})
	no_table := object.union(json.remove(data.disclosure, ["perturbation"]), {"perturbation": {"enabled": true}})
	d4 := decision with input as base_input with data.disclosure as no_table
	denied_for(d4, {"thresholds_invalid"})
	d5 := decision with input as base_input with data.disclosure.perturbation as "on"
	denied_for(d5, {"thresholds_invalid"})
}

# The dominance rule protects sums, whatever the definition asks for, and
# means only where their definition asks for it; a count never gets it.
test_dominance_on_sums_and_on_means_that_ask if {
	d := eval({"table": {"measures": [
		{"name": "beds", "kind": "sum", "dominance": false},
		{"name": "admissions", "kind": "sum", "dominance": true},
		{"name": "mean_cost", "kind": "mean", "dominance": true},
		{"name": "mean_hba1c", "kind": "mean", "dominance": false},
		{"name": "patients", "kind": "count", "dominance": true},
	]}})
	d.allow
	d.dominance_measures == ["admissions", "beds", "mean_cost"]
}

test_dominance_not_asked_when_input_omits_it if {
	d := eval({"table": {"measures": [{"name": "total", "kind": "sum"}, {"name": "average", "kind": "mean"}]}})
	d.allow
	d.dominance_measures == ["total"]
}

test_purpose_may_put_every_mean_under_dominance if {
	d := decision with input as base_input
		with data.disclosure.purposes as {"commissioning": {"dominance_kinds": ["sum", "mean"]}}
	d.allow
	d.dominance_measures == ["admissions", "mean_hba1c"]
}

test_purpose_makes_thresholds_stricter if {
	d := eval({"purpose": "research"})
	d.allow
	d.thresholds.min_cell_count == 10
	d.thresholds.rounding_base == 5
}

test_allow_partial_coverage_above_fraction if {
	d := eval({"coverage": {"sites": {"answered": 9}, "population": {"answered": 108000}}})
	d.allow
	d.partial
}

test_allow_partial_sites_full_population if {
	d := eval({"coverage": {"sites": {"answered": 9}}})
	d.allow
	d.partial
}

test_deny_partial_coverage_below_fraction if {
	d := eval({"coverage": {"sites": {"answered": 8}, "population": {"answered": 107999}}})
	denied_for(d, {"coverage_insufficient"})
	d.partial
}

test_deny_invalid_coverage if {
	denied_for(eval({"coverage": {"sites": {"answered": 11}}}), {"coverage_invalid"})
	denied_for(eval({"coverage": {"population": {"expected": 0, "answered": 0}}}), {"coverage_invalid"})
	denied_for(eval({"coverage": {"population": {"answered": -1}}}), {"coverage_invalid"})
	denied_for(eval({"coverage": {"sites": {"answered": "all"}}}), {"coverage_invalid"})
	denied_for(eval_without(["coverage"]), {"coverage_invalid"})
}

test_deny_unknown_purpose if {
	denied_for(eval({"purpose": "marketing"}), {"purpose_unknown"})
	denied_for(eval_without(["purpose"]), {"purpose_unknown"})
}

test_deny_unknown_measure_kind if {
	d := eval({"table": {"measures": [{"name": "patients", "kind": "count"}, {"name": "top_earner", "kind": "max"}]}})
	denied_for(d, {"measure_kind_unknown"})
	contains(d.reasons[0].message, "top_earner")
	denied_for(eval({"table": {"measures": [{"name": "patients"}]}}), {"measure_kind_unknown"})
}

test_deny_malformed_table if {
	denied_for(eval({"table": {"rows": -1}}), {"table_invalid"})
	denied_for(eval({"table": {"rows": "16"}}), {"table_invalid"})
	denied_for(eval({"table": {"measures": []}}), {"table_invalid"})
	denied_for(eval_without(["table"]), {"table_invalid"})
}

test_deny_table_too_large if {
	denied_for(eval({"table": {"rows": 100001}}), {"table_too_large"})
	eval({"table": {"rows": 100000}}).allow
}

test_deny_invalid_thresholds if {
	d := decision with input as base_input
		with data.disclosure.purposes as {"commissioning": {"min_cell_count": 0}}
	denied_for(d, {"thresholds_invalid"})
	d2 := decision with input as base_input
		with data.disclosure.purposes as {"commissioning": {"dominance": {"n": 1, "k": 1.5}}}
	denied_for(d2, {"thresholds_invalid"})
	d3 := decision with input as base_input
		with data.disclosure.purposes as {"commissioning": {"dominance_kinds": "sum"}}
	denied_for(d3, {"thresholds_invalid"})
	d4 := decision with input as base_input
		with data.disclosure.dominance_on_request_kinds as null
	denied_for(d4, {"thresholds_invalid"})
}

missing_ra1 := {"coverage": {
	"sites": {"answered": 9},
	"trusts": {"answered": 1},
	"activity": {"answered": 25000},
	"missing_trusts": [{"ods": "RA1", "state": "paused", "activity": 15000}],
}}

# Every practice answered, so the population is whole, but a trust's
# hospital activity is missing for everyone: refused, naming the trust
# and its share of the activity.
test_deny_missing_trust_with_whole_population if {
	d := eval(missing_ra1)
	denied_for(d, {"trust_missing"})
	d.partial
	contains(d.reasons[0].message, "trust RA1 did not answer (paused)")
	contains(d.reasons[0].message, "37.5% of the activity of the trusts asked")
}

test_deny_missing_trust_of_unknown_activity if {
	d := eval({"coverage": {
		"sites": {"answered": 9},
		"trusts": {"answered": 1},
		"activity": {"expected": 0, "answered": 0},
		"missing_trusts": [{"ods": "RA1", "state": "disconnected", "activity": 0}],
	}})
	denied_for(d, {"trust_missing"})
	contains(d.reasons[0].message, "does not know")
}

test_allow_missing_trust_when_board_says_so if {
	d := eval(missing_ra1) with data.disclosure.partial_coverage.allow_missing_trusts as true
	d.allow
	d.partial
}

# A plan that asks no trust (aggregate mode) has nothing to miss.
test_allow_without_trusts if {
	d := eval({"coverage": {"trusts": {"expected": 0, "answered": 0}, "activity": {"expected": 0, "answered": 0}}})
	d.allow
}

test_deny_inconsistent_trust_coverage if {
	denied_for(eval({"coverage": {"trusts": {"answered": 1}}}), {"coverage_invalid"})
	denied_for(eval({"coverage": {"trusts": {"answered": 3}}}), {"coverage_invalid"})
	denied_for(eval({"coverage": {"activity": {"answered": -1}}}), {"coverage_invalid"})
	denied_for(eval({"coverage": {"missing_trusts": "RA1"}}), {"coverage_invalid"})
	denied_for(eval_without(["coverage", "trusts"]), {"coverage_invalid"})
	denied_for(eval_without(["coverage", "missing_trusts"]), {"coverage_invalid"})
}
