package sim

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Series is one run to draw, under a legend name.
type Series struct {
	Name   string
	Result *Result
}

// plotBuckets bounds the points per line: a days-long trace has far more changes than a picture has
// pixels, and each bucket keeps its highest value so that short peaks stay visible.
const plotBuckets = 1500

var seriesColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// Picture size.
const (
	plotWidth  = 30 * vg.Centimeter
	plotHeight = 18 * vg.Centimeter
)

// WriteSVG draws instances over time above jobs waiting over time, on one time axis in hours, one line
// per series.
func WriteSVG(w io.Writer, title string, series ...Series) error {
	canvas := vgsvg.New(plotWidth, plotHeight)
	if err := drawPanels(draw.New(canvas), title, series); err != nil {
		return err
	}
	if _, err := canvas.WriteTo(w); err != nil {
		return fmt.Errorf("writing the SVG: %w", err)
	}
	return nil
}

func drawPanels(dc draw.Canvas, title string, series []Series) error {
	if len(series) == 0 {
		return errors.New("nothing to plot")
	}
	var span time.Duration
	for _, s := range series {
		span = max(span, s.Result.Span)
	}
	hours := max(span.Hours(), 1.0/60)

	top, bottom := plot.New(), plot.New()
	top.Title.Text = title
	top.Y.Label.Text = "instances"
	bottom.Y.Label.Text = "jobs waiting"
	bottom.X.Label.Text = "hours since the start of the trace"
	for _, p := range []*plot.Plot{top, bottom} {
		p.X.Min, p.X.Max = 0, hours
		p.X.Tick.Marker = hourTicks{}
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
	}
	for i, s := range series {
		clr := seriesColors[i%len(seriesColors)]
		for _, panel := range []struct {
			p     *plot.Plot
			value func(Sample) int
		}{
			{top, func(s Sample) int { return s.Instances }},
			{bottom, func(s Sample) int { return s.Waiting }},
		} {
			line, err := plotter.NewLine(bucketMax(s.Result.Timeline, span, panel.value))
			if err != nil {
				return fmt.Errorf("plotting %s: %w", s.Name, err)
			}
			line.StepStyle = plotter.PostStep
			line.Color = clr
			line.Width = vg.Points(0.8)
			panel.p.Add(line)
			if panel.p == top && len(series) > 1 {
				top.Legend.Add(s.Name, line)
			}
		}
	}
	top.Legend.Top = true

	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4, PadY: vg.Millimeter * 4}
	panels := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(panels[0][0])
	bottom.Draw(panels[1][0])
	return nil
}

// hourTicks marks the time axis every 1, 2, 3, 6, 12 or 24 hours (or multiples of a day), whichever
// gives at most 16 marks, so that days and hours of the day read off directly.
type hourTicks struct{}

func (hourTicks) Ticks(lo, hi float64) []plot.Tick {
	step := 24.0
	for _, s := range []float64{1, 2, 3, 6, 12, 24} {
		if (hi-lo)/s <= 16 {
			step = s
			break
		}
	}
	for (hi-lo)/step > 16 {
		step += 24
	}
	var ticks []plot.Tick
	for x := math.Ceil(lo/step) * step; x <= hi; x += step {
		ticks = append(ticks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
	}
	return ticks
}

// bucketMax turns a change-point timeline into at most plotBuckets points (x in hours), each the
// highest value seen during its bucket.
func bucketMax(tl []Sample, span time.Duration, value func(Sample) int) plotter.XYs {
	if len(tl) == 0 || span <= 0 {
		return plotter.XYs{{X: 0, Y: 0}}
	}
	width := max(span/plotBuckets, time.Nanosecond)
	var pts plotter.XYs
	cur := 0 // value in force at the start of the bucket
	i := 0
	for b := time.Duration(0); b < span; b += width {
		end := b + width
		hi := cur
		for ; i < len(tl) && tl[i].At < end; i++ {
			cur = value(tl[i])
			hi = max(hi, cur)
		}
		pts = append(pts, plotter.XY{X: b.Hours(), Y: float64(hi)})
	}
	pts = append(pts, plotter.XY{X: span.Hours(), Y: float64(cur)})
	return pts
}
