// esbuild turns `import "./x.css"` into a sibling .css output next to the bundle
declare module "*.css";
