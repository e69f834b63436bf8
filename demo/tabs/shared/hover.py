"""Browser-side hover cards for the embedding map: the point's thumbnail and caption.

gr.Plot has no hover or select event, so a few lines of JS attach plotly's own `plotly_hover`
to every plot inside #map-plot. The figure (demo/tabs/shared/map_figure.py) carries one thumbnail sheet in
`layout.meta` ({atlas: data URI, tile, cols, captions, names}); each image or caption point's
customdata is its pair index, so the card shows that pair's name, tile `index` cropped from the
sheet, and caption. The card is #clip-hover-card, with
data-kind and data-index of the point it shows.
"""

HOVER_JS = r"""
() => {
  const card = document.createElement('div');
  card.id = 'clip-hover-card';
  card.style.cssText = 'position:fixed;z-index:1000;display:none;pointer-events:none;background:white;' +
    'border:1px solid #ccc;border-radius:6px;padding:4px;box-shadow:0 2px 8px rgba(0,0,0,.2);max-width:220px;font:12px sans-serif';
  document.body.appendChild(card);
  let sheet = {uri: null, img: null};
  let shown = 0;  // the hover that the card belongs to: a late thumbnail of an older hover is dropped
  const crop = (meta, i, done) => {
    if (sheet.uri !== meta.atlas) { const img = new Image(); img.src = meta.atlas; sheet = {uri: meta.atlas, img}; }
    const img = sheet.img;
    const draw = () => {
      const c = document.createElement('canvas');
      c.width = c.height = meta.tile;
      c.getContext('2d').drawImage(img, (i % meta.cols) * meta.tile, Math.floor(i / meta.cols) * meta.tile,
                                   meta.tile, meta.tile, 0, 0, meta.tile, meta.tile);
      done(c.toDataURL('image/png'));
    };
    if (img.complete && img.naturalWidth) draw(); else img.addEventListener('load', draw, {once: true});
  };
  const attach = () => {
    document.querySelectorAll('#map-plot .js-plotly-plot').forEach((el) => {
      if (el.dataset.clipHover || typeof el.on !== 'function') return;
      el.dataset.clipHover = '1';
      el.on('plotly_hover', (ev) => {
        const p = ev.points && ev.points[0];
        const kind = p && p.data && p.data.meta && p.data.meta.kind;
        const meta = (el.layout && el.layout.meta) || {};
        const i = p ? Number(p.customdata) : -1;
        if ((kind !== 'image' && kind !== 'caption') || !(i >= 0) || !meta.atlas) { card.style.display = 'none'; return; }
        const token = ++shown;
        const img = document.createElement('img');
        img.style.cssText = 'width:96px;height:96px;image-rendering:pixelated;display:block';
        img.alt = 'thumbnail of pair ' + i;
        const head = document.createElement('b');
        head.textContent = kind + ' ' + ((meta.names || [])[i] || '');
        const txt = document.createElement('div');
        txt.className = 'clip-hover-caption';
        txt.textContent = (meta.captions || [])[i] || '';
        card.replaceChildren(head, img, txt);
        card.dataset.kind = kind;
        card.dataset.index = String(i);
        crop(meta, i, (uri) => { if (token === shown) img.src = uri; });
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
