"""Browser-side hover cards for plotly maps: the point's thumbnail and caption.

gr.Plot has no hover or select event, so a few lines of JS attach plotly's own `plotly_hover`
to every plot inside #map-plot and show customdata[2] (a data: URI) in a floating card.
"""

HOVER_JS = r"""
() => {
  const card = document.createElement('div');
  card.id = 'clip-hover-card';
  card.style.cssText = 'position:fixed;z-index:1000;display:none;pointer-events:none;background:white;' +
    'border:1px solid #ccc;border-radius:6px;padding:4px;box-shadow:0 2px 8px rgba(0,0,0,.2);max-width:220px;font:12px sans-serif';
  document.body.appendChild(card);
  const attach = () => {
    document.querySelectorAll('#map-plot .js-plotly-plot').forEach((el) => {
      if (el.dataset.clipHover || typeof el.on !== 'function') return;
      el.dataset.clipHover = '1';
      el.on('plotly_hover', (ev) => {
        const p = ev.points && ev.points[0];
        const cd = p && p.customdata;
        if (!cd || !cd[2]) { card.style.display = 'none'; return; }
        const img = document.createElement('img');
        img.src = cd[2];
        img.style.cssText = 'width:96px;height:96px;image-rendering:pixelated;display:block';
        const txt = document.createElement('div');
        txt.textContent = cd[1];
        card.replaceChildren(img, txt);
        const e = ev.event || {};
        card.style.left = ((e.clientX || 0) + 16) + 'px';
        card.style.top = ((e.clientY || 0) + 16) + 'px';
        card.style.display = 'block';
      });
      el.on('plotly_unhover', () => { card.style.display = 'none'; });
    });
  };
  new MutationObserver(attach).observe(document.body, {childList: true, subtree: true});
}
"""
