// The shape being drawn (polygon or lasso), or the smart tool's suggested outline, over the slide
// viewer, as SVG in screen pixels, redrawn from its level-0 vertices whenever the view pans or zooms.
import type { Point } from '../state/brush';
import type { SlideViewer } from './slideViewer';

const SVG = 'http://www.w3.org/2000/svg';

export interface ShapeLook {
  /** A closed shape is filled; an open one is the path so far, with a line to the pointer. */
  closed: boolean;
  /** Alt held: the shape removes labels (dashed, red). */
  subtract: boolean;
  pointer?: Point | null;
}

export class ShapeLayer {
  private readonly svg: SVGSVGElement;
  private readonly outline: SVGPolylineElement;
  private readonly rubber: SVGPolylineElement;
  private points: readonly Point[] = [];
  private look: ShapeLook = { closed: false, subtract: false };

  /** `kind`: an extra class of the layer, for its look (the smart tool's outline: 'suggestion'). */
  constructor(private readonly viewer: SlideViewer, kind = '') {
    this.svg = document.createElementNS(SVG, 'svg');
    this.svg.setAttribute('class', `shape-layer ${kind}`.trim());
    this.outline = document.createElementNS(SVG, 'polyline');
    this.outline.setAttribute('class', 'outline');
    this.rubber = document.createElementNS(SVG, 'polyline');
    this.rubber.setAttribute('class', 'rubber');
    this.svg.append(this.outline, this.rubber);
    viewer.node.parentElement!.appendChild(this.svg);
    viewer.onViewChange(() => this.draw());
  }

  show(points: readonly Point[], look: ShapeLook): void {
    this.points = points;
    this.look = look;
    this.draw();
  }

  clear(): void {
    this.show([], { closed: false, subtract: false });
  }

  private draw(): void {
    const screen = (p: Point) => {
      const d = this.viewer.map.gcsToDisplay(p);
      return `${d.x.toFixed(1)},${d.y.toFixed(1)}`;
    };
    const visible = this.points.length > 0;
    this.svg.style.display = visible ? 'block' : 'none';
    this.svg.classList.toggle('subtract', this.look.subtract);
    this.svg.classList.toggle('closed', this.look.closed);
    if (!visible) return;
    // Open: the outline is the path so far, unfilled, and a rubber band goes on to the pointer.
    const ring = this.look.closed ? [...this.points, this.points[0]] : this.points;
    this.outline.setAttribute('points', ring.map(screen).join(' '));
    const tail = !this.look.closed && this.look.pointer ? [this.points[this.points.length - 1], this.look.pointer] : [];
    this.rubber.setAttribute('points', tail.map(screen).join(' '));
  }

  destroy(): void {
    this.svg.remove();
  }
}
