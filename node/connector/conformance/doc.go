// Package conformance holds the tests that run every connector plugin,
// built from cmd/haven-connector-*, through the node's side of the plugin
// protocol against the same synthetic site, and check that they give the
// same Arrow results for the same SQL, stop at the same limits and stop
// when cancelled. It has no code of its own.
package conformance
