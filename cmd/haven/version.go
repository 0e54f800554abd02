package main

import (
	"fmt"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/buildinfo"
	"github.com/spf13/cobra"
)

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of this haven binary",
		Example: "  haven version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := buildinfo.Read()
			rev := bi.Revision
			if rev == "" {
				rev = "unknown"
			}
			if bi.Modified {
				rev += " (modified)"
			}
			fmt.Fprintf(a.stdout, "haven %s\nrevision %s\n%s\ncdm v%d\n", bi.Version, rev, bi.GoVersion, cdm.Version)
			return nil
		},
	}
}
