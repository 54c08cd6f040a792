import type { ColumnDrift } from './drift.ts';
import { formatNumber } from './drift.ts';
import { type DriftReport, validationIssues } from './report.ts';

/**
 * The drift report as one self-contained HTML page (inline CSS and SVG, no scripts, no external assets), so
 * it can be opened from the lake, attached to a ticket or served by any static host as it is.
 */
export function renderDriftReportHtml(report: DriftReport): string {
  const columns = [...report.features].sort(
    (a, b) => Number(b.drifted) - Number(a.drifted) || (b.psi ?? -1) - (a.psi ?? -1),
  );
  const title = `Drift report — ${report.model}@${report.version}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1f2933}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d9e2ec;padding-bottom:.25rem}
h3{font-size:1rem;margin:0 0 .5rem}
.summary{font-size:1.05rem;padding:.75rem 1rem;border-radius:6px;background:#f0f4f8}
.drift{background:#ffe3e3}.ok{background:#e3f9e5}.none{background:#fff3c4}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f5f7fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .45rem;border-radius:3px;font-size:.8rem;font-weight:600}
.badge.drift{background:#e12d39;color:#fff}.badge.ok{background:#3ebd93;color:#fff}.badge.na{background:#9aa5b1;color:#fff}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:1rem;margin:1rem 0}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
.chart{overflow-x:auto}.muted{color:#616e7c}code{background:#f0f4f8;padding:0 .2rem;border-radius:3px}
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="muted">Stage ${esc(report.stage)} · ${esc(report.task)} · generated ${esc(report.generatedAt)}</p>
<p class="summary ${report.status === 'drift' ? 'drift' : report.status === 'no-drift' ? 'ok' : 'none'}">${esc(report.summary)}</p>
${overview(report)}
${validationSection(report)}
<h2>Columns</h2>
${columnTable(columns, report)}
${report.prediction ? columnCard(report.prediction, 'Prediction') : ''}
${columns.map((column) => columnCard(column)).join('\n')}
<h2>How drift is decided</h2>
<p>A column drifts when its difference from the training baseline is both <b>significant</b> — two-sample
Kolmogorov–Smirnov test for numeric columns, chi-squared test of homogeneity for categorical ones, p-values
corrected with ${esc(report.settings.correction)} across the ${report.drift.columnsTested} columns tested, at level
${report.settings.alpha} — and <b>large enough to matter</b>: PSI ≥ ${report.settings.psiThreshold} (numeric) or
Jensen–Shannon distance ≥ ${report.settings.jsThreshold} (categorical). The p-value accounts for the number of rows,
so a handful of requests cannot raise an alarm on noise; the effect-size floor keeps millions of requests from
raising one on a negligible shift. Columns with fewer than ${report.settings.minRows} values are not tested.</p>
<p class="muted">Baseline: <code>${esc(report.baseline.key)}</code> (sha256 ${esc(report.baseline.sha256.slice(0, 12))}…) ·
report <code>${esc(report.keys.json)}</code></p>
</body>
</html>
`;
}

function overview(report: DriftReport): string {
  const rows: Array<[string, string]> = [
    ['Window', `${report.window.since ?? 'beginning'} → ${report.window.until ?? 'now'}`],
    ['Requests seen', `${report.window.firstRequest ?? '—'} → ${report.window.lastRequest ?? '—'}`],
    [
      'Traffic',
      `${report.traffic.rows} rows · ${report.traffic.requests} requests · ${report.traffic.files} capture files`,
    ],
    [
      'Drifted features',
      report.drift.driftedFeatures.length ? report.drift.driftedFeatures.join(', ') : 'none',
    ],
    ['Prediction drift', report.prediction === null ? '—' : report.drift.predictionDrift ? 'yes' : 'no'],
    [
      'Largest PSI',
      report.drift.maxPsi ? `${report.drift.maxPsi.column}: ${fmt(report.drift.maxPsi.value)}` : '—',
    ],
  ];
  return `<table>${rows.map(([k, v]) => `<tr><th style="width:12rem">${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`;
}

function validationSection(report: DriftReport): string {
  const issues = validationIssues(report.validation);
  const examples = report.validation.invalidExamples;
  const counts = (title: string, values: Record<string, number>) =>
    Object.keys(values).length === 0
      ? ''
      : `<p><b>${esc(title)}</b>: ${Object.entries(values)
          .map(([name, count]) => `<code>${esc(name)}</code> × ${count}`)
          .join(', ')}</p>`;
  return `<h2>Input validation</h2>
${issues.length === 0 ? '<p>No problems found in the captured records.</p>' : `<ul>${issues.map((issue) => `<li>${esc(issue)}</li>`).join('')}</ul>`}
${counts('Unknown columns', report.validation.unknownColumns)}
${counts('Missing features', report.validation.missingFeatures)}
${counts('Values of the wrong type', report.validation.invalidValues)}
${
  examples.length === 0
    ? ''
    : `<table><tr><th>Capture object</th><th>Line</th><th>Reason</th></tr>${examples
        .map(
          (e) =>
            `<tr><td><code>${esc(e.key)}</code></td><td class="num">${e.line}</td><td>${esc(e.reason)}</td></tr>`,
        )
        .join('')}</table>`
}`;
}

function columnTable(columns: ColumnDrift[], report: DriftReport): string {
  const all = report.prediction ? [report.prediction, ...columns] : columns;
  if (all.length === 0) return '<p>No columns.</p>';
  const head =
    '<tr><th>Column</th><th>Kind</th><th>Status</th><th class="num">Rows</th><th class="num">PSI</th><th class="num">JS distance</th><th>Test</th><th class="num">p</th><th class="num">adjusted p</th></tr>';
  const body = all
    .map(
      (c) =>
        `<tr><td><a href="#col-${anchor(c.column)}">${esc(c.column)}</a></td><td>${c.kind}</td><td>${badge(c)}</td><td class="num">${c.rows}</td><td class="num">${fmt(c.psi)}</td><td class="num">${fmt(c.jsDistance)}</td><td>${esc(c.test?.name ?? '—')}</td><td class="num">${fmtP(c.test?.pValue)}</td><td class="num">${fmtP(c.test?.adjustedPValue)}</td></tr>`,
    )
    .join('');
  return `<table>${head}${body}</table>`;
}

function columnCard(column: ColumnDrift, title = column.column): string {
  const facts: string[] = [
    `${column.rows} values (baseline ${column.baselineRows})`,
    `missing ${pct(column.missingRate.current)} (baseline ${pct(column.missingRate.baseline)})`,
  ];
  if (column.invalidValues) facts.push(`${column.invalidValues} of the wrong type`);
  if (column.test) {
    facts.push(
      `${column.test.name} statistic ${fmt(column.test.statistic)}${column.test.df !== undefined ? ` (df ${column.test.df})` : ''}, p ${fmtP(column.test.pValue)}, adjusted ${fmtP(column.test.adjustedPValue)}`,
    );
  }
  if (column.effect) {
    facts.push(
      `effect ${column.effect.metric} ${fmt(column.effect.value)} ${column.effect.exceeded ? '≥' : '<'} floor ${column.effect.threshold}`,
    );
  }
  if (column.moments) {
    const m = column.moments;
    facts.push(
      `mean ${fmt(m.current.mean)} (baseline ${fmt(m.baseline.mean)}), std ${fmt(m.current.std)} (baseline ${fmt(m.baseline.std)}), range ${fmt(m.current.min)}…${fmt(m.current.max)} (baseline ${fmt(m.baseline.min)}…${fmt(m.baseline.max)})`,
    );
  }
  const unseen =
    column.unseenCategories && Object.keys(column.unseenCategories).length > 0
      ? `<p><b>Values outside the baseline's categories</b>: ${Object.entries(column.unseenCategories)
          .map(([value, count]) => `<code>${esc(value)}</code> × ${count}`)
          .join(', ')}</p>`
      : '';
  return `<div class="card" id="col-${anchor(column.column)}">
<h3>${esc(title)} ${badge(column)}</h3>
<p class="muted">${facts.map(esc).join(' · ')}</p>
<div class="chart">${barChart(column)}</div>
${unseen}
</div>`;
}

/** Grouped bars per bin: baseline share (grey) next to current share (orange). */
export function barChart(column: ColumnDrift): string {
  const { labels, baseline, current } = column.bins;
  const n = labels.length;
  if (n === 0) return '';
  const group = 44;
  const left = 44;
  const top = 12;
  const plot = 150;
  const labelSpace = 78;
  const width = left + n * group + 16;
  const height = top + plot + labelSpace;
  const max = Math.max(0.01, ...baseline, ...current);
  const y = (share: number) => top + plot - (share / max) * plot;
  const bars: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = left + i * group + 4;
    const b = baseline[i] ?? 0;
    const c = current[i] ?? 0;
    bars.push(
      `<rect x="${x}" y="${y(b).toFixed(1)}" width="17" height="${(top + plot - y(b)).toFixed(1)}" fill="#9aa5b1"><title>${esc(labels[i] ?? '')}: baseline ${pct(b)}</title></rect>`,
      `<rect x="${x + 18}" y="${y(c).toFixed(1)}" width="17" height="${(top + plot - y(c)).toFixed(1)}" fill="#e8590c"><title>${esc(labels[i] ?? '')}: current ${pct(c)}</title></rect>`,
      `<text x="${x + 18}" y="${top + plot + 10}" font-size="10" text-anchor="end" transform="rotate(-40 ${x + 18} ${top + plot + 10})">${esc(truncate(labels[i] ?? '', 18))}</text>`,
    );
  }
  const ticks = [0, 0.5, 1].map((f) => {
    const value = max * f;
    return `<line x1="${left}" x2="${width - 8}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}" stroke="#e4e7eb"/><text x="${left - 4}" y="${(y(value) + 3).toFixed(1)}" font-size="10" text-anchor="end">${pct(value)}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(`${column.column}: share per bin, baseline and current`)}">
${ticks.join('')}
${bars.join('')}
</svg>
<div class="legend muted"><span style="background:#9aa5b1"></span>baseline (training)<span style="background:#e8590c"></span>current (captured traffic)</div>`;
}

function badge(column: ColumnDrift): string {
  if (column.status !== 'tested') return '<span class="badge na">insufficient data</span>';
  return column.drifted ? '<span class="badge drift">DRIFT</span>' : '<span class="badge ok">ok</span>';
}

function esc(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function anchor(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, '_');
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function fmt(value: number | null | undefined): string {
  return value === null || value === undefined ? '—' : formatNumber(value);
}

function fmtP(value: number | null | undefined): string {
  if (value === null || value === undefined) return '—';
  return value < 1e-4 ? value.toExponential(1) : value.toFixed(4);
}

function pct(share: number): string {
  return `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`;
}
