// A small live line chart (uPlot) that follows its container's width and the
// page's colour scheme.
import { html, useEffect, useRef } from "./html.js";

// uPlot is loaded with the first chart, not with the panel.
let uPlotLoading = null;
const loadUPlot = () => (uPlotLoading ??= import("uplot").then((m) => m.default));

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// `series`: [{label, values}] sharing `times` (seconds since the epoch).
export function Chart({ title, times, series, unit = "" }) {
  const box = useRef(null);
  const plot = useRef(null);

  useEffect(() => {
    let uPlot = null;
    let gone = false;
    const make = () => {
      if (!uPlot) return;
      plot.current?.destroy();
      plot.current = null;
      if (!box.current) return;
      const ink = cssVar("--muted");
      const grid = cssVar("--line");
      const colours = [cssVar("--accent"), cssVar("--accent-2")];
      const axis = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
      plot.current = new uPlot({
        width: Math.max(200, box.current.clientWidth), height: 160,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        // The last five minutes, however few points there are yet.
        scales: { x: { time: true, range: (u, min, max) => [Math.min(min ?? max, max - 60), max] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.2)] } },
        axes: [{ ...axis }, { ...axis, size: 44, values: (u, v) => v.map((x) => `${+x.toFixed(2)}${unit}`) }],
        series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: colours[i % colours.length], width: 2 }))],
      }, [times, ...series.map((s) => s.values)], box.current);
    };
    loadUPlot().then((loaded) => { if (!gone) { uPlot = loaded; make(); } });
    const resize = new ResizeObserver(() => {
      if (box.current) plot.current?.setSize({ width: Math.max(200, box.current.clientWidth), height: 160 });
    });
    resize.observe(box.current);
    const scheme = matchMedia("(prefers-color-scheme: dark)");
    scheme.addEventListener("change", make);
    return () => {
      gone = true;
      resize.disconnect();
      scheme.removeEventListener("change", make);
      plot.current?.destroy();
      plot.current = null;
    };
  }, [series.length]);

  useEffect(() => { plot.current?.setData([times, ...series.map((s) => s.values)]); });

  return html`<figure class="chart"><figcaption>${title}</figcaption><div ref=${box} role="img"
    aria-label=${`${title}: ${series.map((s) => `${s.label} ${s.values.at(-1) ?? "none"}`).join(", ")}`}></div></figure>`;
}
