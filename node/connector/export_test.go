package connector

// SetAfterCheck makes Launch call f between checking the plugin's bytes and
// starting the process: a seam for the test that swaps the file in that
// window, which no outside test can hit deterministically.
func SetAfterCheck(c *LaunchConfig, f func()) { c.afterCheck = f }
