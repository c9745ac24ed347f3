// A small element builder, so pages read as the structure they make.

type Child = Node | string | number | null | undefined | false;
type Attributes = Record<string, string | number | boolean | null | undefined | EventListener>;

/** `<tag attrs>children</tag>`; `on*` attributes become listeners, false/null attributes are left out. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attributes: Attributes = {}, ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === 'function') element.addEventListener(name.slice(2).toLowerCase(), value);
    else if (name === 'value' && 'value' in element) (element as HTMLInputElement).value = String(value ?? '');
    else if (name === 'checked' || name === 'disabled' || name === 'selected') (element as any)[name] = Boolean(value);
    else if (value !== false && value !== null && value !== undefined) element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

export function append(parent: Node, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `parent`. */
export function replace(parent: Node, ...children: (Child | Child[])[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, children);
}

/**
 * `replace`, giving focus back to the new element with the `data-focus` key of the one that had
 * it: parts of a page redrawn while it follows a job must not throw a keyboard user out.
 */
export function replaceKeepingFocus(parent: HTMLElement, ...children: (Child | Child[])[]): void {
  const active = document.activeElement;
  const key = active instanceof HTMLElement && parent.contains(active) ? active.dataset.focus : undefined;
  replace(parent, ...children);
  if (key) parent.querySelector<HTMLElement>(`[data-focus="${CSS.escape(key)}"]`)?.focus();
}
