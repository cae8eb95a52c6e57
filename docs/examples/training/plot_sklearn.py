"""
A CNN in a scikit-learn pipeline
================================

:class:`cnnkit.sklearn.CNNClassifier` is a scikit-learn estimator: it takes
flat rows (reshaped to images by ``image_shape``), any class labels, and
works in a :class:`~sklearn.pipeline.Pipeline` and in
:class:`~sklearn.model_selection.GridSearchCV`.  This example needs
scikit-learn (``pip install scikit-learn``).
"""
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from cnnkit import datasets
from cnnkit.sklearn import CNNClassifier

# %%
# Flat rows of 64 pixels, as scikit-learn's own estimators take them, and
# string labels.
x, y = datasets.load_digits()
X = x.reshape(len(x), -1)
names = np.array(["zero", "one", "two", "three", "four", "five", "six",
                  "seven", "eight", "nine"])
labels = names[y]
X_train, X_test, y_train, y_test = train_test_split(
    X, labels, test_size=0.2, random_state=0, stratify=labels)

# %%
# A scaler, then the CNN; ``image_shape`` turns each row back into a 1x8x8
# image.  The grid search tries two learning rates and two network bodies,
# with 3-fold cross-validation.
pipe = make_pipeline(
    MinMaxScaler(),
    CNNClassifier(image_shape=(1, 8, 8), max_iter=12, random_state=0))
small = [("Conv2D", {"filters": 8, "kernel_size": 3, "padding": "same"}),
         "ReLU", ("MaxPool2D", {"pool_size": 2})]
grid = GridSearchCV(pipe, {
    "cnnclassifier__learning_rate": [3e-3, 1e-2],
    "cnnclassifier__layers": [None, small],
}, cv=3)
grid.fit(X_train, y_train)
print("best:", grid.best_params_)
print(f"test accuracy: {grid.score(X_test, y_test):.4f}")
print("predictions:", grid.predict(X_test[:5]), "true:", y_test[:5])

# %%
# Cross-validated accuracy of each candidate:
results = grid.cv_results_
tags = [f"lr={p['cnnclassifier__learning_rate']:g}\n"
        f"{'default body' if p['cnnclassifier__layers'] is None else '8 filters'}"
        for p in results["params"]]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(range(len(tags)), results["mean_test_score"],
       yerr=results["std_test_score"], color="tab:blue", alpha=0.8)
ax.set(xticks=range(len(tags)), xticklabels=tags,
       ylim=(0.8, 1.0), ylabel="accuracy (3-fold CV)")
ax.tick_params(axis="x", labelsize=8)
fig.tight_layout()

# %%
# The fitted network is a :class:`cnnkit.Sequential`:
clf = grid.best_estimator_[-1]
print(clf.classes_)
clf.model_.summary()
