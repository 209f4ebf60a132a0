// The rep inbox (sopflow/gateway/inbox.py), served by the gateway itself: no external asset.
// - Due times: the server shows them in the rep's zone (teams file); with none set, it shows
//   UTC and this shows them in the browser's own zone instead.
// - The SLA countdown is kept current.
// - A local date-time the rep types is read in the browser's zone when the rep has none (tz).
// - An outcome's required fields show when that outcome is chosen.
"use strict";

const repZone = document.body.dataset.zone;
const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

function local(date) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZoneName: "short",
  }).formatToParts(date).map(p => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute} ${parts.timeZoneName}`;
}

function span(ms) {
  const minutes = Math.floor(Math.abs(ms) / 60000);
  const days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60);
  const mins = minutes % 60;
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${mins} min`;
  return mins ? `${mins} min` : "under a minute";
}

function tick() {
  for (const el of document.querySelectorAll(".countdown[data-due]")) {
    if (!el.dataset.due) continue;
    const left = Date.parse(el.dataset.due) - Date.now();
    el.textContent = left >= 0 ? `due in ${span(left)}` : `overdue by ${span(left)}`;
    el.classList.toggle("overdue", left < 0);
  }
}

if (!repZone) {
  for (const el of document.querySelectorAll("time.due")) {
    if (el.dateTime) el.textContent = local(new Date(el.dateTime));
  }
  for (const input of document.querySelectorAll("input[name=tz]")) input.value = browserZone;
}

for (const form of document.querySelectorAll("form.outcome")) {
  const show = () => {
    const chosen = form.querySelector("input[name=outcome]:checked");
    for (const set of form.querySelectorAll("fieldset.needs")) {
      set.hidden = !chosen || set.dataset.outcome !== chosen.value;
    }
  };
  form.addEventListener("change", show);
  show();
}

tick();
setInterval(tick, 15000);
