package linkage

// SetParallelRows lets tests exercise the parallel apply path with small
// batches.
func SetParallelRows(r *Run, n int) { r.parallelRows = n }
