// The overview's two charts, from the figures the page carries as JSON (no other request).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("chart-data").textContent);
  var colours = { "AA": "#2e7d32", "AA-W": "#f9a825", "AE": "#c62828", "AR": "#6a1b9a" };
  var labels = { "AA": "accepté", "AA-W": "avec avertissements", "AE": "refusé (AE)", "AR": "rejeté (AR)" };
  new Chart(document.getElementById("hourly"), {
    type: "bar",
    data: {
      labels: data.hourly.hours,
      datasets: Object.keys(labels).map(function (kind) {
        return { label: labels[kind], data: data.hourly[kind], backgroundColor: colours[kind] };
      })
    },
    options: { animation: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }
  });
  new Chart(document.getElementById("weekly"), {
    type: "line",
    data: {
      labels: data.weekly.weeks,
      datasets: [{ label: "provisoires (%)", data: data.weekly.share, borderColor: "#1565c0" }]
    },
    options: { animation: false, scales: { y: { beginAtZero: true, max: 100 } } }
  });
})();
