// Draws window.VPBENCH (data.js, written by `vpbench publish`) with plotly.js, bundled
// beside it: no network at view time, and it works from file:// as from a web server.
(function () {
  "use strict";
  const data = window.VPBENCH;
  const nights = data.nights;
  const when = (night) => `${night.timestamp.slice(0, 10)} ${night.commit.slice(0, 7)}`.trim();
  const ms = (value) => (value === null || value === undefined ? "" : `${value.toFixed(2)} ms`);

  document.getElementById("summary").textContent =
    `${nights.length} night(s), ${data.entries.length} queries and scenarios; ` +
    `latest ${when(nights[nights.length - 1])}.`;

  if (data.unreadable.length) {
    document.getElementById("unreadable").hidden = false;
    const list = document.getElementById("unreadable-list");
    for (const line of data.unreadable) {
      const item = document.createElement("li");
      item.textContent = line;
      list.appendChild(item);
    }
  }

  const workloads = [...new Set(data.entries.map((entry) => entry.workload))].sort();
  const select = document.getElementById("workload");
  for (const name of workloads) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.appendChild(option);
  }

  const latest = document.querySelector("#latest tbody");
  for (const row of data.latest) {
    const line = document.createElement("tr");
    line.dataset.workload = row.workload;
    if (row.of_target !== null && row.of_target > 1) line.className = "over";
    const cells = [
      row.name, row.workload, ms(row.p50), ms(row.p95), ms(row.target_ms),
      row.of_target === null ? "" : `${Math.round(row.of_target * 100)} %`,
      row.verdict === null ? "" :
        `${row.verdict}${row.ratio === null ? "" : ` ${row.ratio.toFixed(2)}x`}`,
    ];
    cells.forEach((text, index) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (index === 6 && row.verdict) cell.className = row.verdict;
      line.appendChild(cell);
    });
    latest.appendChild(line);
  }

  const charts = document.getElementById("charts");
  const drawn = [];
  for (const entry of data.entries) {
    const div = document.createElement("div");
    div.className = "chart";
    div.id = `chart-${entry.name}`;
    div.dataset.workload = entry.workload;
    charts.appendChild(div);
    const x = entry.points.map((point) => when(nights[point.night]));
    const custom = entry.points.map((point) => point.night);
    const line = (key, name, dash) => ({
      x, y: entry.points.map((point) => point[key]), customdata: custom, name,
      type: "scatter", mode: "lines+markers", line: { dash },
      hovertemplate: `${name} %{y:.2f} ms<br>%{x}<extra></extra>`,
    });
    const traces = [line("p95", "p95", "solid"), line("p50", "p50", "dot")];
    for (const [verdict, symbol, color] of [
      ["slower", "triangle-up", "#cf222e"], ["faster", "triangle-down", "#1a7f37"],
    ]) {
      const judged = entry.points.filter((point) => point.verdict === verdict);
      if (!judged.length) continue;
      traces.push({
        x: judged.map((point) => when(nights[point.night])),
        y: judged.map((point) => point.p95),
        customdata: judged.map((point) => point.night),
        name: verdict, type: "scatter", mode: "markers",
        marker: { symbol, size: 13, color },
        text: judged.map((point) =>
          `${verdict} ${point.ratio.toFixed(2)}x [${point.low.toFixed(2)}, ` +
          `${point.high.toFixed(2)}]${point.paired ? " paired" : ""}`),
        hovertemplate: "%{text}<extra></extra>",
      });
    }
    const shapes = entry.change_points.map((change) => ({
      type: "line", xref: "x", yref: "paper", y0: 0, y1: 1,
      x0: when(nights[change.night]), x1: when(nights[change.night]),
      line: { dash: "dash", color: "#8250df" }, name: "change point",
    }));
    if (entry.target_ms) {
      shapes.push({
        type: "line", xref: "paper", x0: 0, x1: 1, yref: "y",
        y0: entry.target_ms, y1: entry.target_ms, line: { color: "#cf222e", width: 1 },
        name: "target",
      });
    }
    const layout = {
      title: { text: `${entry.name} <span style="font-size:0.8em">(${entry.workload})</span>` },
      margin: { l: 55, r: 10, t: 40, b: 70 }, shapes,
      xaxis: { type: "category", tickangle: -30 },
      yaxis: { title: { text: "ms (log scale)" }, type: "log" },  // a 3x change reads the same at 1 and 100 ms
      hovermode: "closest", showlegend: true, legend: { orientation: "h", y: -0.35 },
    };
    drawn.push(Plotly.newPlot(div, traces, layout, { displaylogo: false, responsive: true })
      .then(() => div.on("plotly_click", (event) => {
        const point = event.points[0];
        window.location.href = nights[point.customdata].page;
      })));
  }

  select.addEventListener("change", () => {
    for (const element of document.querySelectorAll("[data-workload]")) {
      element.hidden = select.value !== "" && element.dataset.workload !== select.value;
    }
  });

  Promise.all(drawn).then(() => { document.body.dataset.rendered = String(drawn.length); });
})();
