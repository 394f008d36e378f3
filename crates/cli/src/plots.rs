//! The SVG plots of the apps: the training loss, the ablation bars, the efficiency curves. Each is
//! rendered in memory and written atomically.

use std::path::Path;

use plotters::prelude::*;
use visualrwkv::demo::AblationSummary;
use visualrwkv::training::StepStats;
use visualrwkv_efficiency::{ModelKind, Point};

use crate::Res;

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    format!("{}: {e}", path.display()).into()
}

/// Renders an SVG of `size` pixels in memory with `draw`, then writes it to `path` atomically.
fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Res<()>,
) -> Res<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        draw(&root)?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    visualrwkv_checkpoint::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// A loss curve (raw and a moving average).
pub fn loss(history: &[StepStats], path: &Path) -> Res<()> {
    let err = |e: String| plot_error(path, e);
    write_svg(path, (800, 400), |root| {
        let max_loss = history.iter().map(|s| s.loss).fold(0.0, f64::max) * 1.05 + 1e-9;
        let steps = history.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption("training loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..steps, 0.0..max_loss)
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc("step").y_desc("cross-entropy").draw().map_err(|e| err(e.to_string()))?;
        let raw: Vec<(f64, f64)> = history.iter().map(|s| (s.step as f64, s.loss)).collect();
        chart.draw_series(LineSeries::new(raw, BLUE.mix(0.3))).map_err(|e| err(e.to_string()))?;
        let window = (history.len() / 50).max(1);
        let smooth: Vec<(f64, f64)> = (0..history.len())
            .map(|i| {
                let lo = i.saturating_sub(window);
                let mean = history[lo..=i].iter().map(|s| s.loss).sum::<f64>() / (i - lo + 1) as f64;
                (history[i].step as f64, mean)
            })
            .collect();
        chart.draw_series(LineSeries::new(smooth, RED.stroke_width(2))).map_err(|e| err(e.to_string()))?;
        Ok(())
    })
}

/// A bar chart of accuracy per prompt/scan combination with its 95 % bootstrap interval as the
/// error bar.
pub fn ablation(summary: &AblationSummary, path: &Path) -> Res<()> {
    let err = |e: String| plot_error(path, e);
    write_svg(path, (960, 440), |root| {
        let n = summary.combos.len().max(1);
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("held-out accuracy, mean and 95 % interval over {} seeds × questions", summary.seeds),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..1.0)
            .map_err(|e| err(e.to_string()))?;
        let labels: Vec<String> = summary.combos.iter().map(|c| format!("{}/{}", c.prompt, c.scan)).collect();
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| labels.get(x.floor() as usize).cloned().unwrap_or_default())
            .y_desc("accuracy")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, c) in summary.combos.iter().enumerate() {
            let (x, iv) = (i as f64, c.overall);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.15, 0.0), (x + 0.85, iv.mean)],
                    BLUE.mix(0.6).filled(),
                )))
                .map_err(|e| err(e.to_string()))?;
            for segment in [
                vec![(x + 0.5, iv.low), (x + 0.5, iv.high)],
                vec![(x + 0.4, iv.low), (x + 0.6, iv.low)],
                vec![(x + 0.4, iv.high), (x + 0.6, iv.high)],
            ] {
                chart
                    .draw_series(std::iter::once(PathElement::new(segment, BLACK.stroke_width(2))))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(())
    })
}

/// Prefill time, decode latency and peak memory against context, RWKV-6 and the transformer.
pub fn efficiency(points: &[Point], path: &Path) -> Res<()> {
    write_svg(path, (1200, 400), |root| {
        let panels = root.split_evenly((1, 3));
        type Metric = (&'static str, fn(&Point) -> f64);
        let metrics: [Metric; 3] = [
            ("prefill time (s)", |p| p.prefill_s),
            ("decode latency (ms/token)", |p| p.decode_ms),
            ("peak memory (MiB)", |p| p.peak_mib()),
        ];
        let max_ctx = points.iter().map(|p| p.context).max().unwrap_or(1) as f64;
        for (panel, (name, f)) in panels.iter().zip(metrics) {
            let max_y = points.iter().map(f).fold(0.0, f64::max) * 1.1 + 1e-9;
            let mut chart = ChartBuilder::on(panel)
                .caption(name, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(0.0..max_ctx * 1.05, 0.0..max_y)?;
            chart.configure_mesh().x_desc("context (tokens)").draw()?;
            for (model, color) in [(ModelKind::Rwkv, BLUE), (ModelKind::Transformer, RED)] {
                let series: Vec<(f64, f64)> =
                    points.iter().filter(|p| p.model == model).map(|p| (p.context as f64, f(p))).collect();
                chart
                    .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                    .label(format!("{model:?}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
                chart.draw_series(series.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))?;
            }
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        }
        Ok(())
    })
}
