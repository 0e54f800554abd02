// Package attack is an attacker in the test suite (issue 11): it asks a
// running network for approved queries over consecutive parameter values
// (index dates a day or a month apart, as the bundle's grids allow, and
// every allowed min_age), repeats identical requests, and reads the
// released tables with nothing but the published rules, to find out what
// they give away about patients.
//
// # What it knows
//
// The attacker knows what any requester knows: the definitions (which
// say how a count is made: t2dm-prevalence counts the patients
// registered and alive on index_date and aged min_age or over, by
// practice, ten-year band and sex) and the disclosure rules the bundle
// publishes, as a Rules value read from each released table's metadata:
// for each released value, the interval of true counts that could have
// given it. Rounding is the rule of a table that was not perturbed;
// Perturbed reads one released through the bundle's perturbation table
// (every true count its Preimage allows).
//
// Two more rules are published, and a requester can read them too: the
// attribute rule (SmallGroups: every value of a small group is withheld as
// attribute_disclosure) and the rule of a binary mean (BinaryMean: when
// the prevalence is withheld as few_contributors, and what a released one
// is). Without perturbation both are deterministic on the true counts, so
// a withheld group proves 1 to threshold-1 patients. Under perturbation
// disclosure control reads the group total and the mean's N and Sum
// through the p-table, and the readers read them that way: a withheld
// group or mean then says no more than a count released below the
// threshold would. NewPrevalenceWithMean and SmallGroups read them;
// NewPrevalence and the count rules alone do not.
//
// # How it reasons
//
// A Model (Prevalence) reads each released table as sums of atoms: the
// patients of one practice, sex and exact age on one index date, and
// those of them with type 2 diabetes, each a whole number ≥ 0, the
// second at most the first. A cell, a margin and the total are each a
// sum of atoms; a group with no row has none; runs at the same index date
// and another min_age sum other subsets of the same atoms. A System
// narrows every atom's interval from every sum it lies in (interval
// constraint propagation), which is sound — it never drops a value that
// satisfies every release — though not complete. Runs at different
// index dates share no atoms: nothing in the rules says who registered,
// died or had a birthday in between, so across dates the attacker only
// compares what each date proves on its own.
//
// From that it infers (Attack.Infer):
//
//   - pinned counts: a value no release showed exactly, narrowed to one
//     value (a cell, margin or total, or an atom);
//   - exact small counts: pinned to 1 … threshold-1;
//   - threshold crossings: the same count at two adjacent values of one
//     parameter, proven below the threshold at one and at or above it at
//     the other (t2dm of G80005 men 40–49, withheld low_count on
//     2025-06-01 and released 10 on 2025-06-02);
//   - single-patient facts: a group proven to hold 1 … threshold-1
//     patients of whom none, or all, have type 2 diabetes (a cell, an
//     atom, or the patients of one exact age: a cell at min_age a less
//     the same cell at a+1), so that anyone who knows a person is in the
//     group learns their diagnosis; or the same count pinned at two
//     adjacent parameter values one patient apart.
//
// Verify checks every inference, and every atom's and released value's
// interval, against the true atoms computed centrally from the raw
// synthetic data: an inference that does not hold is a bug in the
// attacker, and the tests allow none.
//
// A request the coordinator refuses (policy, an off-grid or duplicate
// request, a rate limit or budget, an invalid parameter) is counted, by
// reason code, and the attack moves on. A repeated request whose table is
// identical adds nothing.
package attack
