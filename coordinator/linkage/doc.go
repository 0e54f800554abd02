// Package linkage turns the partial results that sites upload for one run
// into the run's aggregate table, before disclosure control (DESIGN §6, §7,
// §9, §12). It holds everything for that run only, in memory, or, past
// Options.MemoryBudget, partly in spill files that hold run pseudonyms and
// field values (never an NHS number: the coordinator has none) and die
// with the run; Close drops it all.
//
// A Run is built from the run's plan (catalog.Plan), its definition and
// bound parameters. Each upload is an Arrow record batch whose schema must
// be exactly plan.Schema(kind) for the sending site's kind
// (catalog.CheckSchema); Add checks it, validates every row and only then
// applies it, so a rejected batch leaves the run as it was. Add is Decode,
// which checks and decodes the batch without touching the run, then Apply,
// which checks it against what the site sent before and adds it: a caller
// that receives a batch well before it may count (the coordinator stages
// an upload until the node reports the task done) decodes it once, on
// receipt. Table computes the disclosure.Table.
//
// # Aggregate mode
//
// Practices send cells: group columns and measure partials. Counts, sums
// and __n partials are added; __min and __max are combined. A site may send
// a group only once in a run.
//
// Each practice reports only its largest contribution (__top) to a sum or
// mean with the dominance rule (for a sum, its largest non-zero value), so the largest contribution of the run is
// exact but the next ones are unknown. TopContributions holds the run's
// largest value first, followed by upper bounds for the next ones: a
// practice with n contributors, largest value t and sum s can account for
// at most min(n, TopContributions) values, each at most t, together at most
// s. The bounds never understate the largest contributions, so the
// dominance rule stays conservative; with the default (1, k) rule only the
// exact first value matters.
//
// N, in aggregate mode, is the sum of the practices' __n partials, which
// count contributors as linkage mode does (catalog.Partial): for a sum the
// patients whose value is not zero, for a mean, min and max those with a
// non-null value. So the rule for few contributors reads the same N for a
// measure whichever mode its plan has.
//
// # Linkage mode
//
// Sites send one row per patient keyed by the run pseudonym. Rows for the
// same pseudonym are combined field by field following the field's Combine
// rule: trusts' counts are added, exists flags or-ed, the earliest first
// day wins and the sending trust's ODS code becomes the value (ties go to
// the smaller code), day lists are concatenated. Readmissions are counted
// from the concatenated lists exactly as catalog.ReadmissionsVar defines
// them: an admission day a counts once when some discharge day d has
// d < a ≤ d + within_days.
//
// A patient is in the population, for a GP population, when a practice
// sent a row for them; for a hospital population, when any trust sent
// in_population true. Patients outside the population are dropped and
// counted in Stats (trust rows for patients with no population row). A
// patient with no row from a kind of site takes that kind's empty values:
// a count of 0, an exists of false, no first day, no days.
//
// Registration is exclusive, so two practices never send the same
// pseudonym. If they do, the patient is still counted once: the row of the
// practice with the smaller ODS code is kept whatever the arrival order,
// and every extra row is counted in Stats.DuplicateRegistrations for the
// caller to report or refuse. One site sending the same pseudonym twice,
// in one batch or in two, is an error.
//
// Measures are evaluated per patient on the combined values; a patient
// whose variable is null fails every comparison on it. For a sum, N counts
// the patients whose contribution is not zero (the disclosure rule's
// contributors); for a mean, min and max, those with a non-null value.
// TopContributions holds the largest contributions, largest first, at
// least Options.TopContributions of them when there are that many.
//
// Group values are strings: the variable's value, "true" or "false" for a
// bool, the ODS code for a first trust, and Missing for a null.
//
// # Parallelism and memory
//
// The patient table is split into Options.Partitions hash partitions on a
// seeded hash of the pseudonym (the seed keeps a misbehaving site from
// aiming many keys at one partition). Each partition is an open-addressing
// table of 8-byte slots over columnar storage, under its own lock: a
// pseudonym is kept once, as a [16]byte, and every field in a plain slice
// indexed by patient, so nothing is allocated or boxed per row and the
// garbage collector has no pointers to chase. Probes are issued a group
// at a time so that their cache misses overlap.
//
// Decode decodes and validates a batch without locks, so uploads from several
// sites proceed at once; Apply checks and applies each partition's rows,
// one goroutine per partition for large batches. Batches from one site are
// applied one at a time, which makes the duplicate check exact; a site's
// first batch needs no check. Table evaluates the partitions in parallel
// and merges their cells. Options.ExpectedPatients reserves room up front,
// so the table need not grow while batches arrive.
//
// With Options.MemoryBudget the patient table is a Grace hash join: the
// run uses more partitions than cores (64 at least, and enough for the
// expected patients that one is at most an eighth of the budget) and
// keeps an estimate of each partition's bytes. When the partitions in
// memory pass the budget after a batch, the largest move to disk until it
// holds again: a partition's columns are written once to a spill file in
// Options.SpillDir (created with os.CreateTemp, mode 0600, named for the
// run), and from then on its share of every batch is appended to that
// file, a compact binary encoding of the decoded rows and the site they
// came from, instead of its table. Table evaluates the partitions still in
// memory, then rebuilds each spilled partition from its file, replaying
// its rows in their order through the same check and apply code, so that
// combine rules, duplicate registrations and ties come out exactly as in
// memory; evaluates it, and drops it before the next (several at once,
// up to a core each, as fit in what the budget has left or, when it is
// full, in an eighth of it). The table is the same with or without a
// budget, whatever the arrival order. The budget covers the patient
// table's columns; each spilled partition adds a small write buffer, and
// Table briefly holds the partitions it is reading back.
//
// A site that repeats a pseudonym in a later batch is refused by Apply
// when the pseudonym's partition is in memory. When it is spilled, Apply
// cannot see the earlier rows; Table finds the repeat as it reads the
// partition back and fails the run with a *BatchError naming the site.
// A spill file that cannot be created, written or read back (a full disk)
// fails the run with an error naming the file or directory: Apply and
// Table return it from then on, never a partial table. The run's spill
// files are removed by Close and as soon as the run fails.
//
// Add never retains the record: values are copied out, and the caller
// releases the record when Add returns. A Staged from Decode holds the
// record until it is released.
//
// # Bad input
//
// Add rejects, with an error naming the site and the field (and the row),
// a record whose schema differs from the plan's in names, types, order or
// nullability; a null where the plan allows none; a malformed array; a
// negative or implausibly large count (above 2^40, which keeps every total
// exact); a number that is not finite; a group or category value outside
// the variable's vocabulary; a day outside the field's window or a day
// list out of order; a pseudonym sent twice by one site; a group sent
// twice by one practice. Decode finds all of these but the last two across
// batches, which Apply finds (or, for a spilled partition, Table). Such errors are *BatchError values, wrapping
// ErrBadBatch; their row numbers count from 0 within the batch, and they
// never quote a pseudonym.
package linkage
