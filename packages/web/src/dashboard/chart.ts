/**
 * Line charts over time, drawn as SVG by hand: a value axis with its unit and round ticks, a time
 * axis ending at the newest sample ("now"), and one polyline per series. No chart library: the
 * dashboard has a few lines to draw, and the page fetches nothing but this server's files.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The viewBox; the CSS scales it to the panel's width, keeping the proportions (text stays round). */
export const CHART_WIDTH = 480;
export const CHART_HEIGHT = 200;
const PLOT = { left: 50, right: CHART_WIDTH - 16, top: 28, bottom: CHART_HEIGHT - 28 };

export interface Point {
  /** Milliseconds since the epoch (the server's clock, from `stats.time`). */
  t: number;
  v: number;
}

export interface Series {
  label: string;
  /** A class of the polyline and of its legend swatch (`series-0` … `series-4` have colours). */
  className: string;
  points: Point[];
}

export interface ChartOptions {
  /** The value axis' title, e.g. `events/s`, `ms`, `MiB`. */
  unit: string;
  /** How much time the chart shows, ending at `now`. */
  windowMs: number;
  now: number;
  /** The smallest top of the value axis, so a flat zero line still has a sensible scale. @default 1 */
  minTop?: number;
}

/** 0 and up to four round steps (1, 2, 2.5 or 5 times a power of ten) that cover `max`. */
export function valueTicks(max: number, minTop = 1): number[] {
  const top = Math.max(max, minTop);
  const rough = top / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s * 4 >= top) ?? 10 * power;
  const count = Math.max(1, Math.ceil(round(top / step)));
  return Array.from({ length: count + 1 }, (_, i) => round(i * step));
}

/** Replaces the content of `svg` with the axes and the series. */
export function drawTimeChart(svg: SVGSVGElement, series: Series[], options: ChartOptions): void {
  const { windowMs, now } = options;
  const from = now - windowMs;
  const visible = series.map((s) => ({ ...s, points: s.points.filter((p) => p.t >= from && p.t <= now) }));
  const max = Math.max(0, ...visible.flatMap((s) => s.points.map((p) => p.v)));
  const ticks = valueTicks(max, options.minTop);
  const top = ticks[ticks.length - 1];
  const x = (t: number) => PLOT.left + ((t - from) / windowMs) * (PLOT.right - PLOT.left);
  const y = (v: number) => PLOT.bottom - (v / top) * (PLOT.bottom - PLOT.top);
  const format = new Intl.NumberFormat(undefined, { maximumFractionDigits: top < 4 ? 2 : top < 40 ? 1 : 0 });

  const children: SVGElement[] = [];
  children.push(text(4, 15, options.unit, 'axis-unit'));
  for (const tick of ticks) {
    children.push(line(PLOT.left, y(tick), PLOT.right, y(tick), tick === 0 ? 'axis' : 'grid'));
    children.push(text(PLOT.left - 6, y(tick) + 4, format.format(tick), 'tick value-tick', 'end'));
  }
  children.push(line(PLOT.left, PLOT.top, PLOT.left, PLOT.bottom, 'axis'));
  const stepMs = windowMs / 4;
  for (let i = 0; i <= 4; i++) {
    const t = from + i * stepMs;
    const ago = Math.round((now - t) / 1000);
    children.push(line(x(t), PLOT.bottom, x(t), PLOT.bottom + 4, 'axis'));
    children.push(text(x(t), PLOT.bottom + 17, ago === 0 ? 'now' : `−${ago} s`, 'tick time-tick', i === 0 ? 'start' : i === 4 ? 'end' : 'middle'));
  }
  for (const s of visible) {
    if (s.points.length === 0) continue;
    const polyline = document.createElementNS(SVG_NS, 'polyline');
    polyline.setAttribute('points', s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' '));
    polyline.setAttribute('class', `line ${s.className}`);
    children.push(polyline);
  }
  svg.setAttribute('viewBox', `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`);
  svg.replaceChildren(...children);
}

function line(x1: number, y1: number, x2: number, y2: number, className: string): SVGLineElement {
  const element = document.createElementNS(SVG_NS, 'line');
  element.setAttribute('x1', x1.toFixed(1));
  element.setAttribute('y1', y1.toFixed(1));
  element.setAttribute('x2', x2.toFixed(1));
  element.setAttribute('y2', y2.toFixed(1));
  element.setAttribute('class', className);
  return element;
}

function text(x: number, y: number, content: string, className: string, anchor: 'start' | 'middle' | 'end' = 'start'): SVGTextElement {
  const element = document.createElementNS(SVG_NS, 'text');
  element.setAttribute('x', x.toFixed(1));
  element.setAttribute('y', y.toFixed(1));
  element.setAttribute('class', className);
  element.setAttribute('text-anchor', anchor);
  element.textContent = content;
  return element;
}

function round(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}
