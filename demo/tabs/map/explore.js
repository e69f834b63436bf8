// The explorer's bridge (gr.HTML js_on_load): the #atlas-plot figure's events, sent to Python.
// The lasso is drawn here, not by plotly: plotly recomputes its selection over every point at each mouse move
// (2.5 s a move at 200,000 points in a software-rendered browser). A drag draws a polygon on an SVG layer
// and sends it, in data coordinates, on release (the server decides which points lie inside); plotly's box
// select still works from its toolbar. A click sends the clicked row; a hover asks server.hover(set, row)
// for one thumbnail and shows it in a card.
const card = document.createElement('div');
card.id = 'atlas-hover-card';
card.style.cssText = 'position:fixed;z-index:1000;display:none;pointer-events:none;background:white;' +
  'border:1px solid #ccc;border-radius:6px;padding:4px;box-shadow:0 2px 8px rgba(0,0,0,.2);max-width:240px;font:12px sans-serif';
document.body.appendChild(card);
let shown = 0;  // the hover the card belongs to: a late answer to an older hover is dropped
const bind = () => {
  const el = document.querySelector('#atlas-plot .js-plotly-plot');
  if (!el || typeof el.on !== 'function' || !el._ev || el._ev.atlasBound) return;
  el._ev.atlasBound = true;  // plotly replaces its event emitter when it redraws from scratch: bind again then
  element.dataset.bound = String(Number(element.dataset.bound || 0) + 1);
  lasso(el);
  el.on('plotly_selected', (ev) => {
    if (!ev) return;
    const lasso = ev.lassoPoints ? {x: Array.from(ev.lassoPoints.x), y: Array.from(ev.lassoPoints.y)} : null;
    const box = ev.range && ev.range.x ? {x: Array.from(ev.range.x), y: Array.from(ev.range.y)} : null;
    if (lasso || box) trigger('select', {lasso: lasso, box: lasso ? null : box});
  });
  el.on('plotly_click', (ev) => {
    const p = ev && ev.points && ev.points[0];
    if (p && p.customdata !== undefined) trigger('click', {row: Number(p.customdata)});
  });
  el.on('plotly_hover', async (ev) => {
    const p = ev && ev.points && ev.points[0];
    const meta = (el.layout && el.layout.meta) || {};
    if (!p || p.customdata === undefined || !meta.set) return;
    el.atlasHover = Number(p.customdata);
    const token = ++shown;
    const e = ev.event || {};
    const answer = await server.hover(meta.set, Number(p.customdata));
    if (token !== shown || !answer || !answer.uri) return;
    const img = document.createElement('img');
    img.src = answer.uri;
    img.style.cssText = 'width:96px;height:96px;image-rendering:pixelated;display:block';
    const head = document.createElement('b');
    head.textContent = ((p.data.meta || {}).kind || 'point') + ': ' + answer.label;
    const txt = document.createElement('div');
    txt.textContent = answer.caption;
    card.replaceChildren(head, img, txt);
    card.dataset.row = String(answer.row);
    card.style.left = ((e.clientX || 0) + 16) + 'px';
    card.style.top = ((e.clientY || 0) + 16) + 'px';
    card.style.display = 'block';
  });
  el.on('plotly_unhover', () => { shown++; el.atlasHover = null; card.style.display = 'none'; });
};
const lassoed = new WeakSet();  // elements whose listeners are attached (once each)
function lasso(el) {
  const svgNS = 'http://www.w3.org/2000/svg';
  if (!el.querySelector(':scope > .atlas-lasso-layer')) {  // a redraw may have dropped it: add it again
    const layer = document.createElementNS(svgNS, 'svg');
    layer.setAttribute('class', 'atlas-lasso-layer');
    layer.style.cssText = 'position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;z-index:5';
    const poly = document.createElementNS(svgNS, 'polyline');
    poly.setAttribute('style', 'fill:rgba(79,70,229,0.08);stroke:#4f46e5;stroke-width:1.5;stroke-dasharray:4 3');
    layer.appendChild(poly);
    if (getComputedStyle(el).position === 'static') el.style.position = 'relative';
    el.appendChild(layer);
  }
  if (lassoed.has(el)) return;
  lassoed.add(el);
  const draw = (pts) => { const l = el.querySelector(':scope > .atlas-lasso-layer polyline');
                          if (l) l.setAttribute('points', pts.map((q) => q.join(',')).join(' ')); };
  let path = null;
  const local = (e) => { const r = el.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  const inPlot = ([x, y]) => { const L = el._fullLayout; return L && x >= L.xaxis._offset && x <= L.xaxis._offset +
    L.xaxis._length && y >= L.yaxis._offset && y <= L.yaxis._offset + L.yaxis._length; };
  const on = () => ((el._fullLayout || {}).dragmode || 'lasso') === 'lasso';
  el.addEventListener('mousedown', (e) => {
    const p = local(e);
    if (e.button !== 0 || !on() || !inPlot(p) || e.target.closest('.modebar')) return;
    e.stopPropagation(); e.preventDefault();
    path = [p];
    draw(path);
  }, true);
  window.addEventListener('mousemove', (e) => {
    if (!path) return;
    e.stopPropagation();
    path.push(local(e));
    draw(path);
  }, true);
  window.addEventListener('mouseup', (e) => {
    if (!path) return;
    e.stopPropagation();
    const L = el._fullLayout, done = path;
    path = null;
    if (done.length < 3) {  // a click, not a drag: the hovered point's neighbours (plotly never saw the press)
      draw([]);
      if (el.atlasHover !== undefined && el.atlasHover !== null) trigger('click', {row: el.atlasHover});
      return;
    }
    draw(done.concat([done[0]]));
    trigger('select', {lasso: {x: done.map((q) => L.xaxis.p2d(q[0] - L.xaxis._offset)),
                               y: done.map((q) => L.yaxis.p2d(q[1] - L.yaxis._offset))}, box: null});
  }, true);
}
new MutationObserver(bind).observe(document.body, {childList: true, subtree: true});
setInterval(bind, 1000);
