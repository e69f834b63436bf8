// The explorer's bridge (gr.HTML js_on_load): plotly's own events on the #atlas-plot figure, sent to Python.
// A lasso or box sends its polygon or range (the server decides which points lie inside); a click sends
// the clicked row; a hover asks server.hover(set, row) for one thumbnail and shows it in a card.
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
  el.on('plotly_unhover', () => { shown++; card.style.display = 'none'; });
};
new MutationObserver(bind).observe(document.body, {childList: true, subtree: true});
setInterval(bind, 1000);
