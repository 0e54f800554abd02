package main

import "github.com/spf13/cobra"

// newSynthCmd is filled in by the synthetic network work.
func newSynthCmd(a *app) *cobra.Command {
	return &cobra.Command{Use: "synth", Hidden: true}
}
