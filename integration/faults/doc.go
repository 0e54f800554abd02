// Package faults runs a whole Haven network as separate processes and
// breaks it the ways real networks break — a paused site, a database that
// stops answering, a node killed mid-run, results over the limits, the
// coordinator killed mid-run, a replayed run id, a tampered or unsigned
// bundle — and checks each outcome and that nothing already stored is
// lost. It ends with a privacy scan of every byte the coordinator and the
// nodes wrote. It has tests only.
package faults
