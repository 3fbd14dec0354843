// Simple accessible charts: an SVG drawing that is hidden from screen readers beside a table
// that says the same (the table is the accessible alternative, not an afterthought).
export interface Bar {
  label: string;
  value: number;
  target?: number;
}

export function BarChart(props: { title: string; bars: Bar[]; unit: string }) {
  const { bars } = props;
  const max = Math.max(1, ...bars.map((b) => Math.max(b.value, b.target ?? 0)));
  const row = 28;
  const labelWidth = 180;
  const width = 560;
  const scale = (width - labelWidth - 40) / max;
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <svg
        viewBox={`0 0 ${width} ${bars.length * row + 10}`}
        width="100%"
        role="img"
        aria-label={`${props.title}. The table below gives the same figures.`}
        focusable="false"
      >
        {bars.map((b, i) => (
          <g key={i} transform={`translate(0 ${i * row + 5})`}>
            <text x={labelWidth - 8} y={row / 2 + 4} text-anchor="end" class="chart-label">
              {b.label.length > 26 ? `${b.label.slice(0, 25)}…` : b.label}
            </text>
            <rect x={labelWidth} y={4} height={row - 10} width={Math.max(1, b.value * scale)} class={b.target !== undefined && b.value < b.target ? "bar short" : "bar"} />
            <text x={labelWidth + b.value * scale + 4} y={row / 2 + 4} class="chart-value">
              {String(b.value)}
            </text>
            {b.target !== undefined ? (
              <line x1={labelWidth + b.target * scale} x2={labelWidth + b.target * scale} y1={1} y2={row - 3} class="target" />
            ) : null}
          </g>
        ))}
      </svg>
      {bars.some((b) => b.target !== undefined) ? (
        <p class="muted legend">Bars are contacts made; the dark line is the number required. Short bars are in red.</p>
      ) : null}
    </figure>
  );
}
