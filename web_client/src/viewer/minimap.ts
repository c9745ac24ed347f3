// The whole slide in small with the visible part outlined; a click there moves the view.
import type { SlideViewer } from './slideViewer';

export function minimap(viewer: SlideViewer, thumbnailUrl: string, width: number, height: number): HTMLElement {
  const box = document.createElement('div');
  box.className = 'minimap';
  box.setAttribute('aria-label', 'overview of the slide: click to move there');
  const picture = new Image();
  picture.src = thumbnailUrl;
  picture.alt = '';
  const frame = document.createElement('div');
  frame.className = 'minimap-view';
  box.append(picture, frame);
  const update = () => {
    const [x0, y0, x1, y1] = viewer.visibleBox();
    const scale = box.clientWidth / width;
    Object.assign(frame.style, {
      left: `${Math.max(0, x0) * scale}px`, top: `${Math.max(0, y0) * scale}px`,
      width: `${(Math.min(width, x1) - Math.max(0, x0)) * scale}px`,
      height: `${(Math.min(height, y1) - Math.max(0, y0)) * scale}px`,
    });
  };
  viewer.onViewChange(update);
  picture.addEventListener('load', update);
  box.addEventListener('click', (event) => {
    const rect = box.getBoundingClientRect();
    const scale = width / rect.width;
    viewer.centreOn({ x: (event.clientX - rect.left) * scale, y: (event.clientY - rect.top) * scale });
  });
  box.style.aspectRatio = `${width} / ${height}`;
  return box;
}
