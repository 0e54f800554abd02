# METADATA
# title: haven/disclose
# description: |
#   Evaluated by the coordinator before it releases a table. Input:
#
#     purpose    the run's purpose, one of data.purposes
#     table      {rows: number of cells (group combinations),
#                 measures: [{name, kind, dominance}]}, kind one of
#                 data.disclosure.measure_kinds, dominance whether the
#                 definition asks for the dominance rule (so that the plan
#                 carries each cell's largest contributions)
#     coverage   {sites: {expected, answered},
#                 population: {expected, answered},
#                 trusts: {expected, answered},
#                 activity: {expected, answered},
#                 missing_trusts: [{ods, state, activity}]}
#                population counts the people on the lists of the sites
#                where the plan evaluates the population; trusts counts
#                the trusts the plan asks and activity the hospital
#                activity records they hold (apc_episode plus
#                ae_attendance rows, as each trust's node reported them);
#                missing_trusts are the trusts asked that did not answer
#
#   decision is {allow, reasons, thresholds, dominance_measures, partial,
#   perturbation}:
#
#     thresholds          {min_cell_count, rounding_base, dominance: {n, k},
#                         attribute_disclosure}:
#                         counts from 1 to min_cell_count - 1 are withheld,
#                         released counts are rounded to rounding_base, and a
#                         cell of a measure the dominance rule applies to is
#                         withheld when its n largest contributions make up
#                         more than k of it; with attribute_disclosure (the
#                         default, as ACRO treats zeros), every count of a
#                         group whose total is below min_cell_count is
#                         withheld, so that a released 0, or a count equal
#                         to the group's total, says nothing about each of
#                         its few members
#     perturbation        null, or {table}: counts are released through the
#                         cell-key perturbation table at that path of the
#                         bundle (data.disclosure.perturbation, enabled)
#     dominance_measures  names of the measures the dominance rule applies to:
#                         every measure whose kind is in dominance_kinds (the
#                         sums: magnitudes one patient can dominate), and each
#                         measure whose kind is in dominance_on_request_kinds
#                         (the means) and whose definition asks for the rule;
#                         other means are protected by the few-contributors
#                         rule (at least min_cell_count contributors)
#     partial             whether some sites or population did not answer;
#                         a partial table is released only when the answered
#                         share of the population reaches
#                         partial_coverage.min_population_fraction and every
#                         trust asked answered, unless
#                         partial_coverage.allow_missing_trusts is true: a
#                         missing trust leaves out all the activity it holds
#                         for every patient, however small the population
#                         share it stands for
#
#   Defaults come from data.disclosure; data.disclosure.purposes may make
#   them stricter for a purpose.
package haven.disclose

import data.haven.lib

decision := {
	"allow": count(reasons) == 0,
	"reasons": sort(reasons),
	"thresholds": {
		"min_cell_count": settings.min_cell_count,
		"rounding_base": settings.rounding_base,
		"dominance": settings.dominance,
		"attribute_disclosure": attribute_disclosure,
	},
	"perturbation": perturbation,
	"dominance_measures": dominance_measures,
	"partial": partial,
}

purpose := object.get(input, "purpose", "")

# settings are the defaults overlaid with the purpose's own values.
settings := object.union(
	object.remove(data.disclosure, ["purposes"]),
	object.get(data.disclosure, ["purposes", purpose], {}),
)

# A bundle that does not say is protected: zeros are disclosive by default.
attribute_disclosure := object.get(settings, "attribute_disclosure", true)

perturbation := {"table": t} if {
	settings.perturbation.enabled == true
	t := settings.perturbation.table
} else := null

measures := object.get(input, ["table", "measures"], [])

dominance_measures := sort([m.name |
	some m in measures
	dominance_applies(m)
])

dominance_applies(m) if m.kind in settings.dominance_kinds

dominance_applies(m) if {
	m.kind in settings.dominance_on_request_kinds
	m.dominance == true
}

sites := object.get(input, ["coverage", "sites"], {})

population := object.get(input, ["coverage", "population"], {})

partial if sites.answered < sites.expected

partial if population.answered < population.expected

default partial := false

reasons contains lib.reason("purpose_unknown", "the run's purpose is not one of the purposes the board recognises") if {
	not purpose_known
}

# `not` is applied only to rules without arguments or to calls whose
# arguments are always defined, so that a missing field denies.
purpose_known if data.purposes[purpose]

reasons contains lib.reason("thresholds_invalid", "the disclosure thresholds in the bundle are not valid for this purpose") if {
	not thresholds_valid
}

thresholds_valid if {
	is_number(settings.min_cell_count)
	settings.min_cell_count >= 1
	is_number(settings.rounding_base)
	settings.rounding_base >= 1
	settings.dominance.n >= 1
	settings.dominance.k > 0
	settings.dominance.k <= 1
	is_array(settings.dominance_kinds)
	is_array(settings.dominance_on_request_kinds)
	is_boolean(attribute_disclosure)
	perturbation_valid
}

perturbation_valid if not "perturbation" in object.keys(settings)

perturbation_valid if settings.perturbation.enabled == false

perturbation_valid if {
	settings.perturbation.enabled == true
	is_string(settings.perturbation.table)
	settings.perturbation.table != ""
}

reasons contains lib.reason("table_invalid", "table.rows must be a non-negative number and table.measures a non-empty list") if {
	not table_shaped
}

table_shaped if {
	is_number(input.table.rows)
	input.table.rows >= 0
	is_array(input.table.measures)
	count(input.table.measures) > 0
}

reasons contains lib.reason("table_too_large", sprintf("the table has more than %d cells", [settings.max_rows])) if {
	is_number(input.table.rows)
	input.table.rows > settings.max_rows
}

reasons contains lib.reason("measure_kind_unknown", sprintf("measure %q has a kind the board has no disclosure rule for", [name])) if {
	some m in measures
	not known_kind(m)
	name := object.get(m, "name", "")
}

known_kind(m) if m.kind in settings.measure_kinds

reasons contains lib.reason("coverage_invalid", "coverage must give expected and answered counts, with 0 <= answered <= expected and expected > 0") if {
	not coverage_valid
}

coverage_valid if {
	counts_valid(sites)
	counts_valid(population)
	trusts_valid
}

trusts := object.get(input, ["coverage", "trusts"], {})

activity := object.get(input, ["coverage", "activity"], {})

missing_trusts := object.get(input, ["coverage", "missing_trusts"], null)

# A plan without trusts expects none, so expected may be 0 here; the
# missing trusts must be exactly those that did not answer.
trusts_valid if {
	counts_or_none_valid(trusts)
	counts_or_none_valid(activity)
	is_array(missing_trusts)
	count(missing_trusts) == trusts.expected - trusts.answered
}

counts_or_none_valid(c) if {
	is_number(c.expected)
	is_number(c.answered)
	c.answered >= 0
	c.answered <= c.expected
}

counts_valid(c) if {
	is_number(c.expected)
	is_number(c.answered)
	c.expected > 0
	c.answered >= 0
	c.answered <= c.expected
}

reasons contains lib.reason("coverage_insufficient", sprintf("only part of the population answered; at least %v is needed to release a partial table", [settings.partial_coverage.min_population_fraction])) if {
	coverage_valid
	partial
	not partial_releasable
}

partial_releasable if {
	population.answered / population.expected >= settings.partial_coverage.min_population_fraction
}

reasons contains lib.reason("trust_missing", sprintf("trust %s did not answer (%s); the table would leave out the hospital activity it holds, %s", [t.ods, t.state, activity_share(t)])) if {
	coverage_valid
	not settings.partial_coverage.allow_missing_trusts == true
	some t in missing_trusts
}

activity_share(t) := sprintf("%v%% of the activity of the trusts asked", [round((1000 * t.activity) / activity.expected) / 10]) if {
	activity.expected > 0
	is_number(t.activity)
}

activity_share(t) := "a share of the trusts' activity the coordinator does not know" if {
	not activity_known(t)
}

activity_known(t) if {
	activity.expected > 0
	is_number(t.activity)
}
