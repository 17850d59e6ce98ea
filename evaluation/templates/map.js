// The map of report.html: reads window.MAP_DATA (report_files/map_data.js), draws one dot per image on a canvas in
// its cluster's colour, shows the image's thumbnail, label, cluster and confidence on hover, and highlights the
// clusters whose legend entries are clicked. Opened as report.html#selftest it checks itself and writes the result
// into <pre id="map-selftest"> (the browser test reads it); as report.html#screenshot it shows the map with one image.
(function () {
  const data = window.MAP_DATA;
  const canvas = document.getElementById('map');
  if (!data || !canvas) return;
  const ctx = canvas.getContext('2d');
  const tip = document.getElementById('map-tip');
  const legend = document.getElementById('map-legend');
  const pad = 8, radius = data.x.length > 5000 ? 1.6 : 2.6;
  const highlighted = new Set();
  let drawnPoints = 0;

  function place(i) {
    return [pad + data.x[i] * (canvas.width - 2 * pad), pad + data.y[i] * (canvas.height - 2 * pad)];
  }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    drawnPoints = 0;
    const dim = highlighted.size > 0;
    const passes = dim ? [false, true] : [true];  // dimmed points first, highlighted ones on top
    for (const lit of passes) {
      for (let i = 0; i < data.x.length; i++) {
        const on = !dim || highlighted.has(data.c[i]);
        if (on !== lit) continue;
        const [px, py] = place(i);
        ctx.fillStyle = on ? data.colours[data.c[i]] : '#d8d8d8';
        ctx.beginPath();
        ctx.arc(px, py, radius, 0, 2 * Math.PI);
        ctx.fill();
        drawnPoints++;
      }
    }
  }

  function nearest(mx, my) {
    let best = -1, bestD = 64;  // within 8 pixels
    for (let i = 0; i < data.x.length; i++) {
      if (highlighted.size > 0 && !highlighted.has(data.c[i])) continue;
      const [px, py] = place(i);
      const d = (px - mx) * (px - mx) + (py - my) * (py - my);
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  function showTip(i, clientX, clientY) {
    if (i < 0) { tip.style.display = 'none'; return; }
    const perSheet = data.sheet_side * data.sheet_side;
    const k = i % perSheet, sheet = data.sheets[Math.floor(i / perSheet)];
    const thumb = tip.querySelector('.thumb');
    thumb.style.backgroundImage = 'url("report_files/' + sheet + '")';
    thumb.style.backgroundPosition = (-(k % data.sheet_side) * data.thumb) + 'px ' +
      (-Math.floor(k / data.sheet_side) * data.thumb) + 'px';
    tip.querySelector('.path').textContent = data.label[i];
    tip.querySelector('.cluster').textContent = data.names[data.c[i]];
    tip.querySelector('.confidence').textContent = 'confidence ' + data.p[i].toFixed(2);
    tip.dataset.index = i;
    tip.style.display = 'block';
    tip.style.left = (clientX + 14 + window.scrollX) + 'px';
    tip.style.top = (clientY + 14 + window.scrollY) + 'px';
  }

  canvas.addEventListener('mousemove', function (e) {
    const r = canvas.getBoundingClientRect();
    const sx = canvas.width / r.width, sy = canvas.height / r.height;
    showTip(nearest((e.clientX - r.left) * sx, (e.clientY - r.top) * sy), e.clientX, e.clientY);
  });
  canvas.addEventListener('mouseleave', function () { tip.style.display = 'none'; });

  data.names.forEach(function (name, c) {
    if (!data.sizes[c]) return;
    const entry = document.createElement('button');
    entry.type = 'button';
    entry.className = 'entry';
    entry.dataset.cluster = c;
    entry.innerHTML = '<span class="swatch"></span>';
    entry.querySelector('.swatch').style.background = data.colours[c];
    entry.appendChild(document.createTextNode(name + ' (' + data.sizes[c] + ')'));
    entry.addEventListener('click', function () {
      if (highlighted.has(c)) highlighted.delete(c); else highlighted.add(c);
      entry.classList.toggle('on', highlighted.has(c));
      draw();
    });
    legend.appendChild(entry);
  });
  draw();

  function hoverPoint(i) {
    const r = canvas.getBoundingClientRect();
    const [px, py] = place(i);
    canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + px * r.width / canvas.width,
                                                      clientY: r.top + py * r.height / canvas.height, bubbles: true}));
  }

  if (location.hash === '#screenshot') {  // the README's picture: the map section alone, one image shown
    document.body.classList.add('map-only');
    hoverPoint(Math.floor(data.x.length / 2));
  }

  if (location.hash === '#selftest') {
    const out = {points: data.x.length, drawn: drawnPoints};
    hoverPoint(0);
    const thumb = tip.querySelector('.thumb');
    out.hover = {shown: tip.style.display === 'block', index: Number(tip.dataset.index),
                 label: tip.querySelector('.path').textContent, expected_label: data.label[0],
                 thumb: thumb.style.backgroundImage, cluster: tip.querySelector('.cluster').textContent};
    const entry = legend.querySelector('[data-cluster="' + data.c[0] + '"]');
    entry.click();
    out.legend = {on_after_click: entry.classList.contains('on'), highlighted: Array.from(highlighted),
                  drawn_after_click: drawnPoints};
    entry.click();
    out.legend.on_after_second_click = entry.classList.contains('on');
    const sheet = new Image();  // the hovered thumbnail's sprite sheet, as the page loads it
    const report = function () {
      out.hover.sheet_width = sheet.naturalWidth;
      document.getElementById('map-selftest').textContent = JSON.stringify(out);
    };
    sheet.onload = report;
    sheet.onerror = report;
    sheet.src = 'report_files/' + data.sheets[0];
  }
})();
