// The dashboard's only script (served from this server; the Content-Security-Policy
// allows no other). Two jobs: live pages fetch themselves again on each server change,
// and tables marked `sortable` sort by a clicked column.
"use strict";

function sortTable(table, column, numeric, ascending) {
  const body = table.tBodies[0];
  if (!body) return;
  const key = (row) => {
    const cell = row.cells[column];
    if (!cell) return numeric ? -Infinity : "";
    const holder = cell.querySelector("[data-value]") || cell;
    const raw = holder.dataset.value !== undefined ? holder.dataset.value : cell.textContent;
    return numeric ? (parseFloat(raw) || -Infinity) : raw.trim().toLowerCase();
  };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const ka = key(a), kb = key(b);
    const order = ka < kb ? -1 : ka > kb ? 1 : 0;
    return ascending ? order : -order;
  });
  rows.forEach((row) => body.appendChild(row));
}

function makeSortable(root) {
  root.querySelectorAll("table.sortable").forEach((table) => {
    const head = table.tHead && table.tHead.rows[0];
    if (!head) return;
    Array.from(head.cells).forEach((th, column) => {
      th.classList.add("sort-handle");
      th.addEventListener("click", () => {
        const ascending = th.dataset.order !== "asc";
        Array.from(head.cells).forEach((other) => delete other.dataset.order);
        th.dataset.order = ascending ? "asc" : "desc";
        sortTable(table, column, th.dataset.sort === "num", ascending);
      });
    });
  });
}

async function refresh() {
  const response = await fetch(window.location.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const main = document.getElementById("main");
  const next = fresh.getElementById("main");
  if (main && next) {
    main.replaceChildren(...Array.from(next.childNodes).map((n) => document.adoptNode(n)));
    makeSortable(main);
  }
}

function goLive() {
  if (document.body.dataset.live !== "1" || !window.EventSource) return;
  const events = new EventSource("/ui/events");
  let busy = false, again = false;
  events.addEventListener("change", async (event) => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do { again = false; await refresh(); } while (again);
      document.body.dataset.version = event.data;
    } finally {
      busy = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  makeSortable(document);
  goLive();
});
