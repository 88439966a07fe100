package audit

import (
	"fmt"
	"html"
	"strings"
	"time"
)

// The charts of a Summary as inline SVG fragments: the HTML report embeds them, and the auditor
// web UI shows the same fragments (GET /v1/audit/summary returns them beside the figures), so
// the two draw the same thing. They use presentation attributes only (no style attributes, no
// script, no external reference), so they render under a CSP that allows no inline style or
// script. Every text from a record (a code, a label) is XML-escaped.

// Chart names, the keys of Summary.Charts.
const (
	ChartVerdicts = "verdicts"
	ChartFailures = "failures"
	ChartTCB      = "tcb"
	ChartChanges  = "changes"
)

// Colours of the verdict statuses; TCB labels take theirs from palette in order.
const (
	colourAffirming       = "#2e7d32"
	colourWarning         = "#f9a825"
	colourContraindicated = "#c62828"
)

var palette = []string{"#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#4e342e", "#ad1457", "#558b2f", "#37474f"}

// Charts returns the summary's charts as SVG fragments by name (ChartVerdicts, ChartFailures,
// ChartTCB, ChartChanges).
func (s *Summary) Charts() map[string]string {
	return map[string]string{
		ChartVerdicts: s.verdictsChart(),
		ChartFailures: s.failuresChart(),
		ChartTCB:      s.tcbChart(),
		ChartChanges:  s.changesChart(),
	}
}

func esc(s string) string { return html.EscapeString(s) }

type series struct {
	name, colour string
	values       []int
}

const (
	chartW   = 720
	chartH   = 260
	marginL  = 48
	marginR  = 16
	marginT  = 16
	marginB  = 56
	legendDY = 18
)

func emptyChart(id, title, msg string) string {
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" class="chart empty" id="%s" role="img" aria-label="%s" viewBox="0 0 %d 60" width="%d" height="60"><text x="8" y="34" font-size="14" fill="#555">%s</text></svg>`,
		esc(id), esc(title), chartW, chartW, esc(msg))
}

// colourTestRoots marks the verdicts given with test vendor roots.
const colourTestRoots = "#b26a00"

// noteH is the height of the note a chart carries above its plot (testRootsNote).
const noteH = 22

// testRootsNote is the line a chart of verdicts carries when some were given with test vendor
// roots, so that nobody takes a test log's chart for production evidence; "" when none were.
func (s *Summary) testRootsNote() string {
	if s.TestRoots == 0 {
		return ""
	}
	return fmt.Sprintf("TEST VENDOR ROOTS: %d of %d verdicts are test-mode evidence, not genuine hardware", s.TestRoots, s.Attestations)
}

// stackedBars draws one bar per label, stacked by series, with a legend under it; a non-empty
// note is written above the plot (class "test-roots"), and tips[i], if any, is added to the
// tooltip of label i's bars.
func stackedBars(id, title, note string, labels, tips []string, ss []series) string {
	if len(labels) == 0 {
		return emptyChart(id, title, "No attestation verdicts in the window.")
	}
	maxV := 1
	for i := range labels {
		t := 0
		for _, s := range ss {
			t += s.values[i]
		}
		maxV = max(maxV, t)
	}
	cols := legendCols(ss)
	legendRows := (len(ss) + cols - 1) / cols
	h := chartH + legendRows*legendDY
	if note != "" {
		h += noteH
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="%s" role="img" aria-label="%s" viewBox="0 0 %d %d" width="%d" height="%d">`, esc(id), esc(title), chartW, h, chartW, h)
	fmt.Fprintf(&b, `<title>%s</title>`, esc(title))
	if note != "" {
		fmt.Fprintf(&b, `<text class="test-roots" x="%d" y="15" font-size="13" font-weight="bold" fill="%s">%s</text><g transform="translate(0 %d)">`, marginL, colourTestRoots, esc(note), noteH)
	}
	plotW, plotH := float64(chartW-marginL-marginR), float64(chartH-marginT-marginB)
	// Axes and a scale: 0, half, max.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, marginL, marginT, marginL, chartH-marginB)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, marginL, chartH-marginB, chartW-marginR, chartH-marginB)
	for _, v := range []int{0, maxV / 2, maxV} {
		y := float64(chartH-marginB) - plotH*float64(v)/float64(maxV)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" text-anchor="end" fill="#333">%d</text>`, marginL-4, y+4, v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, marginL+1, y, chartW-marginR, y)
	}
	slot := plotW / float64(len(labels))
	barW := min(48, max(1, slot*0.7))
	every := max(1, len(labels)/12) // at most about 12 axis labels
	for i, l := range labels {
		x := float64(marginL) + slot*float64(i) + (slot-barW)/2
		y := float64(chartH - marginB)
		for _, s := range ss {
			v := s.values[i]
			if v == 0 {
				continue
			}
			bh := plotH * float64(v) / float64(maxV)
			y -= bh
			tip := ""
			if i < len(tips) {
				tip = tips[i]
			}
			fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %d%s</title></rect>`,
				x, y, barW, bh, s.colour, esc(l), esc(s.name), v, esc(tip))
		}
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" text-anchor="end" fill="#333" transform="rotate(-35 %.1f %d)">%s</text>`,
				x+barW/2, chartH-marginB+14, x+barW/2, chartH-marginB+14, esc(l))
		}
	}
	legend(&b, ss, chartH)
	if note != "" {
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// legendCols is how many legend entries fit side by side: three short names (about 7 px a
// character at 12 px), two longer ones, or one per row, so that no name runs into the next.
func legendCols(ss []series) int {
	longest := 0
	for _, s := range ss {
		longest = max(longest, len([]rune(s.name)))
	}
	switch {
	case longest <= 26:
		return 3
	case longest <= 42:
		return 2
	}
	return 1
}

func legend(b *strings.Builder, ss []series, top int) {
	cols := legendCols(ss)
	colW := (chartW - marginL) / cols
	for i, s := range ss {
		x := marginL + (i%cols)*colW
		y := top + (i/cols)*legendDY
		fmt.Fprintf(b, `<rect class="legend" x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d" font-size="12" fill="#222">%s</text>`,
			x, y, s.colour, x+16, y+11, esc(s.name))
	}
}

func (s *Summary) verdictsChart() string {
	labels, tips := make([]string, len(s.Periods)), make([]string, len(s.Periods))
	ss := []series{{"affirming", colourAffirming, nil}, {"warning", colourWarning, nil}, {"contraindicated", colourContraindicated, nil}}
	for i, p := range s.Periods {
		labels[i] = p.Period
		if p.TestRoots > 0 {
			tips[i] = fmt.Sprintf(" (%d of the period's verdicts on TEST vendor roots)", p.TestRoots)
		}
		ss[0].values = append(ss[0].values, p.Affirming)
		ss[1].values = append(ss[1].values, p.Warning)
		ss[2].values = append(ss[2].values, p.Contraindicated)
	}
	return stackedBars("chart-"+ChartVerdicts, "Attestation verdicts per "+s.Bucket+" by status", s.testRootsNote(), labels, tips, ss)
}

func (s *Summary) tcbChart() string {
	labels := make([]string, len(s.TCB))
	ss := make([]series, len(s.TCBLabels))
	for j, l := range s.TCBLabels {
		ss[j] = series{name: l, colour: palette[j%len(palette)]}
	}
	for i, p := range s.TCB {
		labels[i] = p.Period
		for j, l := range s.TCBLabels {
			ss[j].values = append(ss[j].values, p.Counts[l])
		}
	}
	return stackedBars("chart-"+ChartTCB, "Verdicts per "+s.Bucket+" by the TCB status the verifier established", s.testRootsNote(), labels, nil, ss)
}

// failuresChart draws one horizontal bar per failure code.
func (s *Summary) failuresChart() string {
	const id, title = "chart-" + ChartFailures, "Contraindicated verdicts by failure code"
	if len(s.Failures) == 0 {
		return emptyChart(id, title, "No failed check in the window.")
	}
	const rowH, labelW = 22, 230
	h := marginT + rowH*len(s.Failures) + 8
	maxV := 1
	for _, f := range s.Failures {
		maxV = max(maxV, f.Count)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="%s" role="img" aria-label="%s" viewBox="0 0 %d %d" width="%d" height="%d">`, id, title, chartW, h, chartW, h)
	fmt.Fprintf(&b, `<title>%s</title>`, title)
	plotW := float64(chartW - labelW - marginR - 40)
	for i, f := range s.Failures {
		y := marginT + i*rowH
		w := max(1, plotW*float64(f.Count)/float64(maxV))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="end" fill="#222">%s</text>`, labelW-6, y+14, esc(f.Code))
		fmt.Fprintf(&b, `<rect class="bar" x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %d</title></rect>`, labelW, y+2, w, rowH-6, colourContraindicated, esc(f.Code), f.Count)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="12" fill="#222">%d</text>`, float64(labelW)+w+6, y+14, f.Count)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// changesChart draws the policy changes, collateral updates and access changes as points on a
// time line.
func (s *Summary) changesChart() string {
	const id, title = "chart-" + ChartChanges, "Policy changes, collateral updates and access changes over the window"
	from, to := s.From, s.To
	if from.IsZero() {
		from = s.First
	}
	if to.IsZero() {
		to = s.Last
	}
	if len(s.Changes) == 0 {
		return emptyChart(id, title, "No policy change, collateral update or access change in the window.")
	}
	for _, c := range s.Changes { // a window of records timed outside it still draws them
		if c.Time.Before(from) {
			from = c.Time
		}
		if c.Time.After(to) {
			to = c.Time
		}
	}
	span := to.Sub(from)
	if span <= 0 {
		span = time.Second
	}
	const h, lineY = 120, 50
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="%s" role="img" aria-label="%s" viewBox="0 0 %d %d" width="%d" height="%d">`, id, title, chartW, h, chartW, h)
	fmt.Fprintf(&b, `<title>%s</title>`, title)
	plotW := float64(chartW - marginL - marginR)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444" stroke-width="2"/>`, marginL, lineY, chartW-marginR, lineY)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#333">%s</text>`, marginL, lineY+22, esc(from.Format(time.RFC3339)))
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end" fill="#333">%s</text>`, chartW-marginR, lineY+22, esc(to.Format(time.RFC3339)))
	for _, c := range s.Changes {
		x := float64(marginL) + plotW*float64(c.Time.Sub(from))/float64(span)
		colour, y := palette[0], lineY-12
		switch c.Kind {
		case "collateral_update":
			colour, y = palette[3], lineY+12
		case "access_change":
			colour, y = palette[1], lineY-24
		}
		fmt.Fprintf(&b, `<circle class="point" cx="%.1f" cy="%d" r="6" fill="%s"><title>record %d, %s, %s by %s: %s</title></circle>`,
			x, y, colour, c.Index, esc(c.Time.Format(time.RFC3339)), esc(c.Kind), esc(c.Actor), esc(c.What))
	}
	legend(&b, []series{{name: "policy change", colour: palette[0]}, {name: "collateral update", colour: palette[3]}, {name: "access change", colour: palette[1]}}, h-28)
	b.WriteString(`</svg>`)
	return b.String()
}
