// Package disclosure applies statistical disclosure control to an aggregate
// table before the coordinator releases it to a commissioner (DESIGN §9).
// The thresholds come from the governance policy decision haven/disclose;
// the package takes them as a Thresholds value and depends on nothing else
// in Haven.
//
// Apply takes the true table (one cell per group, one Input per measure)
// and returns a Released table in which every value is either released,
// rounded, or withheld with a Reason. It adds one-way margins and a grand
// total for count and sum measures.
//
// # Rules
//
// Each measure is controlled on its own: a cell's patients count of 200 can
// be released while its admitted count of 3 is withheld.
//
//   - Counts. 0 is released as 0: an empty group tells nothing about any
//     patient. A count from 1 to MinCount-1 is withheld (low_count). Any
//     other count is rounded half up to a multiple of RoundingBase, but
//     never below the smallest multiple of the base that is at least
//     MinCount: with the defaults (8, 5) 8 to 12 show as 10, and with
//     (12, 5) a 12 shows as 15, not 10. So a released count is 0 or at
//     least MinCount, and a positive count is never shown as 0.
//   - Sums. A sum with no contributors (Input.N: the patients who add
//     something to it) is released as 0, as a count of 0 is; with 1 to
//     MinCount-1 it is withheld (few_contributors), so a sum for a group
//     whose patient count is too small to show is not shown either. With the dominance rule, a sum whose Dominance.N largest
//     contributions exceed Dominance.K of it is withheld (dominance).
//     Released sums are rounded half up to a multiple of RoundingBase.
//   - Means follow the same rules as sums, N counting every value, zeros
//     included. The dominance rule applies where the measure asks for it;
//     the reference policy asks for it on every sum but on a mean only
//     where its definition does, leaving means to the few-contributors
//     rule. Means get no margins and no secondary suppression through
//     totals: a mean is not the sum of others. How much more a mean is
//     controlled depends on what it averages (Measure.Values):
//   - Binary and integer means. For 0/1 values (a flag: the mean is a
//     prevalence) Sum is the number of patients with a 1; for whole
//     numbers ≥ 0 (a count of events, an age) it is at least the number of
//     patients with a non-zero value. Either way a mean and a rounded N
//     give Sum back (0.006711 × ~298 = 2), so a mean whose Sum is from 1 to
//     MinCount-1 is withheld (few_contributors), as a count of those
//     patients would be. A released mean is R(Sum)/R(N), where R is the
//     rounding of counts (half up to a multiple of RoundingBase, never
//     below the smallest releasable multiple): so it tells no more than the
//     rounded Sum and N would. The true Sum/N, even to 4 significant
//     figures, would pin the exact N and undo the rounding of the counts
//     beside it (12/295 = 0.04068, which 12/294 and 12/296 do not give).
//     Because such a mean gives back either rounded figure from the other,
//     it is also withheld (secondary) when a count or sum of the same cell
//     whose true value equals its N or its Sum is withheld: prevalence is
//     withheld where patients or t2dm is. A measure that does not say what
//     it averages (ValueUnspecified) is controlled as integer, the
//     conservative choice.
//   - Continuous means (a measurement such as a blood pressure) are
//     released as Sum/N to 4 significant figures: with the exact Sum
//     unreleased, N cannot be recovered from the mean.
//   - Min and max. Each is one patient's own value, so by default it is
//     withheld (min_max_disclosive). If ReleaseMinMax is set it is
//     released exactly when at least MinCount patients contribute.
//   - Means, mins and maxes over no patients do not exist
//     (not_applicable, no_patients), nor do their margins (not_additive).
//
// # Margins and secondary suppression
//
// For two or more dimensions, every count and sum measure gets one margin
// per value of each dimension (the total over the other dimensions), and
// every table with dimensions gets a grand total. Margins are computed
// from the true cells and pass through the same primary rules and
// rounding; they are not sums of rounded cells.
//
// Margins let a reader subtract. After primary suppression, further cells
// and margins are withheld (secondary) until no withheld value is exactly
// determined by the released ones through the equations a reader knows:
// each margin is the sum of its cells, the total is the sum of the cells
// and of each dimension's margins. Released values are taken as exact,
// ignoring the protection that rounding gives. A heuristic picks the
// complements (the smallest non-zero released cell of the line first, then
// the line's margin, zeros last, since a zero is often known to be zero),
// and an exact audit (Gauss-Jordan elimination in integer arithmetic over
// each connected group of withheld values) checks the result, adding
// complements until nothing is
// determined. A rule that only asks for two or more withheld cells in every
// line is not enough: a cell that bridges two closed rectangles is still
// their difference.
//
// Limits: a withheld value is protected from exact derivation, not from
// being bounded (a withheld count is known to be in 1..MinCount-1, and
// non-negativity narrows ranges further); and each measure is protected on
// its own, so one measure can still be estimated from others. In
// particular:
//
//   - A binary mean over the same patients as a count of its 1s or of its
//     patients (prevalence beside t2dm and patients) is withheld whenever
//     either count is, and otherwise shows only what the rounded counts
//     do. The tie is found by equal true values in the same cell, so a
//     count over another population (another where clause, a margin) is
//     not tied to the mean: the rules hold each on its own, and a mean may
//     still give the approximate size of such a group.
//   - An integer mean bounds its non-zero contributors only from above:
//     a Sum of 40 may be 40 patients with 1 or one patient with 40, and
//     the second is for the dominance rule, where the measure asks for it.
//   - Rounding hides N only to within the base: a released binary or
//     integer mean, with R(N) ≥ MinCount, still gives R(Sum) and R(N)
//     to a reader who tries small fractions, which is no more than
//     rounded counts give.
//   - A continuous mean is the true Sum/N to 4 significant figures, so
//     beside a rounded count it estimates the unreleased sum.
//   - A mean of 1 or near it says that all or nearly all patients of the
//     group have the value (attribute disclosure); in a group of at least
//     MinCount patients, as with a count equal to its group's, that is not
//     withheld.
//
// # Attribute disclosure
//
// With Thresholds.AttributeDisclosure (the reference bundle's
// data.disclosure.attribute_disclosure, on by default as ACRO treats
// zeros), a cell, margin or total whose group total (the count measure
// marked GroupTotal: a count with no where clause, such as patients) is
// from 1 to MinCount-1 has every value withheld (attribute_disclosure).
// Otherwise "patients withheld, t2dm 0" says that none of a handful of
// known people has diabetes, and "t2dm equal to patients" that all do.
// Every value of the group gets the same reason, a non-zero count
// included: withholding only the zeros and the equal counts would let the
// reason itself tell them apart. A table without a group total measure is
// not covered by the rule. Under the plain rules the withheld values take
// part in secondary suppression like any other.
//
// # Cell-key perturbation
//
// When Thresholds.Perturbation is set (the bundle enables
// data.disclosure.perturbation and names a p-table; see policy/ptable),
// every count, in cells, margins and the total, is released as the table's
// value for its true count and its cell key, instead of being suppressed
// and rounded. The cell key of a count (Input.Key) is the sum mod R of the
// record keys of the patients it counts, which only the sites can derive;
// a margin's or total's key is the sum of its cells' keys, which is the sum
// of its own patients' keys, so margins and totals are perturbed as cells
// of their own and, like cells, the same way in every run that counts the
// same patients. Repeating or averaging a query therefore gains nothing,
// and two runs that differ by one patient give counts with unrelated keys.
// The reference table releases counts from 1 to 10 as 0 or 10 (rarely 15)
// and no value proves a count is under the threshold, so a pair of
// releases never proves a crossing.
//
// Counts then need no low_count suppression and no secondary suppression:
// the only withheld counts are those of small groups (attribute_disclosure),
// and subtracting released cells from a margin gives them only to within
// the sum of the perturbations (each up to 10), which spans every count a
// small group can have.
//
// The attribute disclosure rule reads the group total through the p-table
// too: a group is small when its perturbed total is below MinCount, so a
// withheld group says no more than a released 0 would. A rule on the true
// total would prove, across two runs, that a group grew from 7 to 8.
//
// Sums and means are controlled by the same principle: nothing released
// may be a deterministic function of whether a small number of patients is
// below the threshold. Every sum and mean carries a key for its N
// (Input.NKey: the record keys of its contributors), and the
// few-contributors rule is applied to N released through the p-table: a
// sum or mean is withheld when its perturbed N is below MinCount, whatever
// the true N, 0 included (there is no separate no-patients reason under
// perturbation, since it would tell 0 from 1-7). So a sum of admissions
// withheld in one run and released in the next no longer proves that the
// admitted patients went from 7 to 8.
//
// A mean of 0/1 values (a prevalence) also carries a key for its Sum
// (Input.SumKey: the record keys of the patients with a 1), and is released
// as the perturbed Sum over the perturbed N to 4 significant figures: it
// says no more than two perturbed counts would, and when the definition
// also counts the same patients (t2dm and patients beside prevalence) it
// is their released ratio. Other means are Sum/N to 4 significant figures
// (continuous values) or the rounded Sum over the rounded N (whole
// numbers), as without perturbation. Sums keep the dominance rule, are
// rounded to the base and keep secondary suppression: a sum is a
// magnitude, not a count of patients, so it is not perturbed itself.
package disclosure
