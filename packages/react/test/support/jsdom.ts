/**
 * A browser-like global environment for React Testing Library: a jsdom window whose document and
 * DOM classes become globals. Import it before anything that touches the DOM.
 */
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://localhost/', pretendToBeVisual: true });
const { window } = dom;
const globals: Record<string, unknown> = {
  window,
  document: window.document,
  navigator: window.navigator,
  getComputedStyle: window.getComputedStyle.bind(window),
  requestAnimationFrame: window.requestAnimationFrame.bind(window),
  cancelAnimationFrame: window.cancelAnimationFrame.bind(window),
};
for (const name of ['Node', 'Element', 'HTMLElement', 'HTMLInputElement', 'Text', 'DocumentFragment', 'MutationObserver', 'Event', 'KeyboardEvent', 'MouseEvent', 'InputEvent', 'FocusEvent']) {
  globals[name] = (window as unknown as Record<string, unknown>)[name];
}
for (const [name, value] of Object.entries(globals)) {
  Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
}

export { dom };
