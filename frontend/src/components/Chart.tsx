// A metric over time with the plant's threshold band, drawn by uPlot.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { METRIC_LABEL, METRIC_UNIT } from "../lib/format";
import type { Bounds, Metric, SeriesPoint } from "../lib/types";

interface Props {
  metric: Metric;
  points: SeriesPoint[];
  bounds: Bounds | null | undefined;
  /** The period shown (RFC 3339), so one point does not stretch the axis. */
  from: string;
  to: string;
  /** Moments drawn as vertical lines (care journal entries). */
  markers?: { time: string; color: string }[];
}

function cssVar(name: string, fallback: string): string {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

export function Chart({ metric, points, bounds, from, to, markers = [] }: Props) {
  const container = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const times = points.map((p) => new Date(p.time).getTime() / 1000);
    const avg = points.map((p) => p[metric]?.avg ?? null);
    const min = points.map((p) => p[metric]?.min ?? null);
    const max = points.map((p) => p[metric]?.max ?? null);
    const line = cssVar("--chart-line", "#1d5fb8");
    const band = cssVar("--chart-band", "rgba(30,107,58,0.12)");
    const thresholdBand: uPlot.Plugin = {
      hooks: {
        drawClear: (u) => {
          if (!bounds || (bounds.min === null && bounds.max === null)) return;
          const top = u.valToPos(bounds.max ?? u.scales.y?.max ?? 0, "y", true);
          const bottom = u.valToPos(bounds.min ?? u.scales.y?.min ?? 0, "y", true);
          const ctx = u.ctx;
          ctx.save();
          ctx.fillStyle = band;
          ctx.fillRect(u.bbox.left, top, u.bbox.width, bottom - top);
          ctx.restore();
        },
      },
    };
    const markerLines: uPlot.Plugin = {
      hooks: {
        draw: (u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.setLineDash([3, 3]);
          ctx.lineWidth = 2;
          for (const marker of markers) {
            const x = u.valToPos(new Date(marker.time).getTime() / 1000, "x", true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
            ctx.strokeStyle = marker.color;
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
        },
      },
    };
    const options: uPlot.Options = {
      width: element.clientWidth || 600,
      height: 220,
      plugins: [thresholdBand, markerLines],
      legend: { show: false },
      scales: {
        x: { time: true, range: () => [new Date(from).getTime() / 1000, new Date(to).getTime() / 1000] },
        y: {
          range: (_u, low, high) => {
            const values = [low, high, bounds?.min, bounds?.max].filter((v): v is number => typeof v === "number");
            const lo = Math.min(...values);
            const hi = Math.max(...values);
            const pad = (hi - lo) * 0.1 || 1;
            return [lo - pad, hi + pad];
          },
        },
      },
      axes: [{}, { label: METRIC_UNIT[metric], size: 60 }],
      series: [
        {},
        { label: `${METRIC_LABEL[metric]} avg`, stroke: line, width: 2, spanGaps: false },
        { label: "min", stroke: line, width: 1, dash: [4, 4] },
        { label: "max", stroke: line, width: 1, dash: [4, 4] },
      ],
    };
    const plot = new uPlot(options, [times, avg, min, max], element);
    const resize = new ResizeObserver(() => {
      plot.setSize({ width: element.clientWidth, height: 220 });
    });
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [metric, points, bounds, from, to, markers]);

  const label = `${METRIC_LABEL[metric]} chart${
    bounds ? `, healthy range ${bounds.min ?? "none"} to ${bounds.max ?? "none"} ${METRIC_UNIT[metric]}` : ""
  }`;
  return <div ref={container} className="chart" role="img" aria-label={label} />;
}
