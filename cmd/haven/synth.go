package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/synth"
)

func newSynthCmd(a *app) *cobra.Command {
	var (
		out     string
		scale   string
		seed    uint64
		sites   int
		workers int
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "synth --out DIR --scale small|icb|national --seed N",
		Short: "Generate a synthetic NHS network of GP practices and trusts as Parquet files",
		Long: `Generate a synthetic NHS network: GP practices and hospital trusts, each
with the CDM tables it holds as Parquet files, the national data opt-out list,
and a network.yaml describing every site, file and deliberate data defect.

The output depends only on --seed, --scale and --sites: two runs write
identical files whatever --workers is. Scales: small (8 practices, 2 trusts,
about 50k patients), icb (150 practices, 4 trusts, about 1.5M patients) and
national (about 6,500 practices, 230 trusts, 60M patients).`,
		Example: `  # A small network for tests and demos
  haven synth --out ./net --scale small --seed 1

  # The first 20 practices of an ICB, replacing an earlier network in ./icb
  haven synth --out ./icb --scale icb --seed 7 --sites 20 --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := synth.ParseScale(scale)
			if err != nil {
				return fmt.Errorf("--scale: %w", err)
			}
			if out == "" {
				return fmt.Errorf("--out: no output directory given")
			}
			cfg := synth.Config{Out: out, Scale: sc, Seed: seed, Sites: sites, Workers: workers, Force: force}
			var bar *progressbar.ProgressBar
			if isTerminal(a.stderr) {
				start := time.Now()
				cfg.Progress = func(done, total int) {
					if bar == nil {
						// A network done in a couple of seconds needs no bar.
						if time.Since(start) < 2*time.Second {
							return
						}
						bar = progressbar.NewOptions(total,
							progressbar.OptionSetWriter(a.stderr),
							progressbar.OptionSetDescription("sites"),
							progressbar.OptionShowCount(),
							progressbar.OptionSetElapsedTime(true),
							progressbar.OptionSetPredictTime(true),
							progressbar.OptionClearOnFinish(),
							progressbar.OptionThrottle(100*time.Millisecond),
						)
					}
					bar.Set(done)
				}
			}
			a.logger.Debug("generating synthetic network", "out", out, "scale", sc, "seed", seed, "sites", sites)
			sum, err := synth.Generate(cmd.Context(), cfg)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			return writeSynthSummary(a.stdout, sum, peakRSS())
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "directory to write the network to (created if absent; must be empty unless --force)")
	f.StringVar(&scale, "scale", string(synth.ScaleSmall), "network size: small, icb or national")
	f.Uint64Var(&seed, "seed", 1, "random seed; the same seed and scale give identical files")
	f.IntVar(&sites, "sites", 0, "keep only the first N GP practices of the scale and the trusts they use (0: all)")
	f.IntVar(&workers, "workers", 0, "sites generated in parallel (0: one per CPU); never changes the output")
	f.BoolVar(&force, "force", false, "replace a network already in --out (removes only network.yaml, sites/ and national/)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// writeSynthSummary prints what was generated as a two-column table.
func writeSynthSummary(w io.Writer, s *synth.Summary, rss int64) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("output", s.Out)
	row("scale", fmt.Sprintf("%s (seed %d)", s.Scale, s.Seed))
	row("sites", fmt.Sprintf("%s gp, %s trust", count(int64(s.Practices)), count(int64(s.Trusts))))
	row("patients", count(s.Patients))
	row("registered population", count(s.RegisteredPopulation))
	for _, t := range cdm.TableNames() {
		if n, ok := s.Rows[t]; ok {
			row("rows "+t, count(n))
		}
	}
	row("national opt-outs", count(s.NationalOptOuts))
	row("bytes written", bytesHuman(s.Bytes))
	row("seconds", strconv.FormatFloat(s.Elapsed.Seconds(), 'f', 1, 64))
	if rss > 0 {
		row("peak RSS", bytesHuman(rss))
	} else {
		row("peak RSS", "unknown")
	}
	return tw.Flush()
}

// peakRSS returns this process's peak resident set size in bytes, from
// VmHWM in /proc/self/status, or 0 where that is unavailable.
func peakRSS() int64 {
	if runtime.GOOS != "linux" {
		return 0
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}

// count formats n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	sign := ""
	if n < 0 {
		sign, s = "-", s[1:]
	}
	var b strings.Builder
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteByte(s[i])
	}
	return sign + b.String()
}

// bytesHuman formats n bytes with a binary unit.
func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), "KMGTPE"
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, suffix[i])
}
